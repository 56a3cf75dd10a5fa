"""hydra.api.fields: strict reading of JSON bodies, every refusal a 400 naming the field."""

import math

import pytest

from hydra.api.errors import APIError
from hydra.api.fields import MAX_STOP_STRINGS, Fields


def refusal(read) -> APIError:
    with pytest.raises(APIError) as info:
        read()
    assert info.value.http_status == 400
    return info.value


def test_a_default_is_returned_for_absent_and_null_fields():
    fields = Fields({"n": None})
    assert fields.integer("n", 1, 8, 1) == 1 and fields.integer("k", 1, 8) is None
    assert fields.number("t", 0.0, 2.0, 0.5) == 0.5 and fields.string("s", default="d") == "d"
    assert fields.boolean("b", True) is True


@pytest.mark.parametrize("value", [True, 1.5, "3", [3]])
def test_integers_are_integers_not_bools_or_floats(value):
    assert refusal(lambda: Fields({"n": value}).integer("n", 0, 10)).param == "n"


@pytest.mark.parametrize("value", [math.inf, math.nan, False, "1"])
def test_numbers_are_finite_and_not_bools(value):
    assert refusal(lambda: Fields({"x": value}).number("x", -10, 10)).param == "x"


def test_ranges_and_lengths_are_enforced():
    assert "[0, 10]" in refusal(lambda: Fields({"n": 11}).integer("n", 0, 10)).message
    assert refusal(lambda: Fields({"s": "abcd"}).string("s", max_length=3)).param == "s"
    stops = ["x"] * (MAX_STOP_STRINGS + 1)
    assert refusal(lambda: Fields({"stop": stops}).stops("stop")).param == "stop"


def test_nested_fields_name_their_path():
    assert refusal(lambda: Fields({"o": {"k": "x"}}).nested("o").integer("k", 0, 1)).param == "o.k"


def test_messages_take_text_parts_and_map_developer_to_system():
    turns = Fields({"messages": [
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant"},
    ]}).messages()
    assert turns == ({"role": "system", "content": "rules"}, {"role": "user", "content": "ab"},
                     {"role": "assistant", "content": ""})


@pytest.mark.parametrize("content", [[{"type": "image_url", "image_url": {}}], ["text"], 5])
def test_non_text_content_is_refused(content):
    read = lambda: Fields({"messages": [{"role": "user", "content": content}]}).messages()  # noqa: E731
    assert refusal(read).param == "messages[0].content"
