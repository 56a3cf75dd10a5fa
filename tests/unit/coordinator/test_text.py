"""hydra.coordinator.text: stop strings and held-back text in streamed output."""

from hypothesis import given
from hypothesis import strategies as st

from hydra.coordinator.text import TextAssembler
from tests.tiny_models import byte_tokenizer


def stream_text(text: str, stop: tuple[str, ...]) -> tuple[str, str]:
    tokenizer = byte_tokenizer()
    assembler = TextAssembler(tokenizer, stop)
    streamed = ""
    for token in tokenizer(text)["input_ids"]:
        streamed += assembler.push(token)
        if assembler.stopped:
            break
    return streamed + assembler.finish(), assembler.text


def test_stop_strings_cut_the_text_and_never_leak_into_the_stream():
    assert stream_text("Hello world. Next", (".",)) == ("Hello world", "Hello world")
    assert stream_text("abc STOP def", ("STOP",)) == ("abc ", "abc ")
    assert stream_text("no stop here", ("zzz",)) == ("no stop here", "no stop here")
    assert stream_text("wörld ünïcode", ()) == ("wörld ünïcode", "wörld ünïcode")


@given(st.text(max_size=40), st.lists(st.text(min_size=1, max_size=4), max_size=3))
def test_streamed_text_always_equals_the_final_text(text, stops):
    streamed, final = stream_text(text, tuple(stops))
    assert streamed == final
    assert not any(s in final for s in stops)
