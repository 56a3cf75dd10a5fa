"""hydra.sdk.sse: events from data lines, the terminator, an error event after the stream
began, and a stream cut before its terminator."""

import pytest

from hydra.sdk.errors import ConnectionFailed, StreamError, UnexpectedResponse
from hydra.sdk.sse import EventStream


def feed(events: EventStream, text: str) -> list:
    return [e for line in text.split("\n") if (e := events.feed(line)) is not None]


def test_events_are_dispatched_at_blank_lines_until_done() -> None:
    events = EventStream(lambda payload: payload)
    got = feed(events, ': a comment\nevent: chunk\ndata: {"n": 1}\n\ndata:{"n": 2}\n\ndata: [DONE]\n\n')
    assert got == [{"n": 1}, {"n": 2}] and events.done
    events.end()  # a finished stream ends quietly


def test_an_event_may_span_several_data_lines() -> None:
    events = EventStream(lambda payload: payload)
    assert feed(events, 'data: {"text":\ndata: "two lines"}\n\n') == [{"text": "two lines"}]


def test_an_error_event_raises_stream_error() -> None:
    events = EventStream(lambda payload: payload)
    error = '{"error": {"message": "shutting down", "type": "service_unavailable", "code": "shutting_down"}}'
    with pytest.raises(StreamError) as raised:
        feed(events, f'data: {{"n": 1}}\n\ndata: {error}\n\ndata: [DONE]\n\n')
    assert raised.value.code == "shutting_down" and raised.value.message == "shutting down"


def test_a_stream_cut_before_done_is_a_lost_connection() -> None:
    events = EventStream(lambda payload: payload)
    feed(events, 'data: {"n": 1}\n\n')
    with pytest.raises(ConnectionFailed, match=r"before its \[DONE\]"):
        events.end()


def test_an_event_that_is_not_json_is_unexpected() -> None:
    with pytest.raises(UnexpectedResponse):
        feed(EventStream(lambda payload: payload), "data: {oops\n\n")
