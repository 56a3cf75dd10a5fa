"""hydra.errors: one exception tree, and what each kind of failure becomes at the API."""

import importlib
import inspect
import pkgutil

import pytest

import bootstrap
import hydra
import protocols
from hydra.api.errors import APIError, from_error
from hydra.coordinator.routing import NoRoute
from hydra.economy.service import NoFederation
from hydra.errors import ConfigError, HydraError, InvalidRequest, PeerError, UnknownModel
from protocols.errors import ErrorCode, ProtocolError

CLIENT_SIDE = "hydra.sdk"  # the SDK's errors describe a node's answers to an app: their own tree


def our_exception_classes() -> list[type[BaseException]]:
    found = []
    for package in (hydra, protocols, bootstrap):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.startswith(CLIENT_SIDE):
                continue
            module = importlib.import_module(info.name)
            found += [
                cls for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, BaseException) and cls.__module__ == info.name
            ]
    return found


def test_every_exception_we_define_is_a_hydra_error():
    classes = our_exception_classes()
    assert len(classes) >= 12  # the tree is really being walked
    assert [c.__qualname__ for c in classes if not issubclass(c, HydraError)] == []


@pytest.mark.parametrize(("error", "status", "code"), [
    (ConfigError("bad flag"), 400, None),
    (InvalidRequest("the prompt is empty"), 400, None),
    (UnknownModel("unknown model 'x'"), 404, None),
    (NoRoute("no chain of peers covers m"), 503, "no_route"),
    (NoFederation("no HYDRA token federation has answered yet"), 503, "no_federation"),
    (PeerError("peer went away"), 502, None),
    (ProtocolError(ErrorCode.BAD_FIELD, "n must be positive"), 400, None),
])
def test_the_api_answers_each_kind_with_its_status(error, status, code):
    answer = from_error(error)
    assert (answer.http_status, answer.code) == (status, code)
    assert error.message in answer.message


def test_an_api_error_passes_through_unchanged():
    error = APIError(429, "slow down", code="rate_limit_exceeded")
    assert from_error(error) is error


def test_protocol_errors_carry_their_wire_code():
    assert ProtocolError(ErrorCode.OUT_OF_ORDER, "step at 3").protocol_code == "out_of_order"
    assert PeerError("x").protocol_code == "internal"
