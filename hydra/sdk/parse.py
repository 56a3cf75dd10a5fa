"""Tolerant reading of a node's JSON into the SDK's frozen dataclasses.

Unknown keys are ignored (a newer node may send more); a missing, null or mistyped field
takes its default (None, an empty tuple, ...). Only a field without a default is required:
a result lacking one is an ``UnexpectedResponse``, while an optional nested object or a list
item lacking one is read as absent (``Balance.hydra`` is None when the node has no HYDRA
account; a route hop without a peer id is dropped).
A field's JSON key is its name, or ``metadata["key"]``: a name or a path of names."""

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints, is_typeddict

from hydra.sdk.errors import UnexpectedResponse

T = TypeVar("T")
SKIP = object()  # a value that does not fit its field: the field keeps its default

SCALARS: dict[type, Callable[[Any], bool]] = {
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def key(name: str | tuple[str, ...], default: Any = dataclasses.MISSING) -> Any:
    """A field read from JSON key ``name`` (a path when a tuple) instead of its own name;
    required unless given a ``default``."""
    return dataclasses.field(default=default, metadata={"key": name})


@functools.cache
def fields_of(cls: type) -> tuple[tuple[str, tuple[str, ...], Any, bool], ...]:
    """``(attribute, key path, type, required)`` for each field of dataclass ``cls``."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        path = f.metadata.get("key", f.name)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, (path,) if isinstance(path, str) else path, hints[f.name], required))
    return tuple(out)


def lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(name)
    return data


def build(cls: type[T], data: Any) -> T:
    """An instance of dataclass ``cls`` from a JSON object."""
    if not isinstance(data, Mapping):
        raise UnexpectedResponse(None, None, f"expected a JSON object for {cls.__name__}", body=data)
    values = {}
    for name, path, hint, required in fields_of(cls):
        value = convert(hint, lookup(data, path))
        if value is not SKIP:
            values[name] = value
        elif required:
            raise UnexpectedResponse(None, None, f"{cls.__name__} without {'.'.join(path)!r}", body=data)
    return cls(**values)


def convert(hint: Any, value: Any) -> Any:
    """``value`` as ``hint`` says, or ``SKIP``."""
    if value is None:
        return SKIP
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return first_fit(get_args(hint), value)
    if origin is tuple:  # only tuple[X, ...]: items that do not fit are dropped
        if not isinstance(value, list):
            return SKIP
        items = (fit(get_args(hint)[0], item) for item in value)
        return tuple(item for item in items if item is not SKIP)
    if dataclasses.is_dataclass(hint):
        return build(hint, value) if isinstance(value, Mapping) else SKIP
    if origin in (dict, Mapping) or is_typeddict(hint):  # open-ended objects stay as they came
        return value if isinstance(value, Mapping) else SKIP
    if hint is Any:
        return value
    return hint(value) if SCALARS[hint](value) else SKIP


def first_fit(arms: tuple[Any, ...], value: Any) -> Any:
    """The first arm of a union that ``value`` fits."""
    for arm in arms:
        if arm is not type(None) and (out := fit(arm, value)) is not SKIP:
            return out
    return SKIP


def fit(hint: Any, value: Any) -> Any:
    """``convert``, where an object lacking a required field does not fit (an optional field,
    an item of a list) instead of failing the whole answer."""
    try:
        return convert(hint, value)
    except UnexpectedResponse:
        return SKIP
