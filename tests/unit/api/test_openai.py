"""hydra.api.openai request parsing, in process: what a body becomes, and what it is refused for."""

import pytest

from hydra.api.errors import APIError
from hydra.api.openai import choice_seed, completion_prompt, parse

USER = [{"role": "user", "content": "hi"}]


def refused(body, chat: bool = True) -> APIError:
    with pytest.raises(APIError) as info:
        parse(body, chat, 512)
    assert info.value.http_status == 400
    return info.value


def test_a_minimal_chat_body_gets_openai_defaults():
    req = parse({"model": "smollm2", "messages": USER}, True, 512)
    params = req.generation.params
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (512, 1.0, 1.0, 0)
    assert (req.n, req.stream, req.include_usage, req.logprobs) == (1, False, False, False)
    assert req.generation.messages == ({"role": "user", "content": "hi"},)


def test_sampling_fields_are_read_and_max_completion_tokens_wins():
    req = parse({"model": "m", "messages": USER, "max_tokens": 9, "max_completion_tokens": 3,
                 "temperature": 0, "top_p": 0.5, "seed": 7, "stop": "x", "n": 2, "stream": True,
                 "stream_options": {"include_usage": True}, "presence_penalty": 1.5}, True, 512)
    params = req.generation.params
    assert (params.max_tokens, params.temperature, params.top_p, params.seed) == (3, 0.0, 0.5, 7)
    assert params.stop == ("x",) and (req.n, req.stream, req.include_usage) == (2, True, True)


def test_logprobs_mean_a_flag_in_chat_and_a_count_in_completions():
    chat = parse({"model": "m", "messages": USER, "logprobs": True, "top_logprobs": 3}, True, 512)
    assert chat.logprobs and chat.generation.top_logprobs == 3
    no_flag = parse({"model": "m", "messages": USER, "top_logprobs": 3}, True, 512)
    assert no_flag.generation.top_logprobs is None
    completion = parse({"model": "m", "prompt": "hi", "logprobs": 2}, False, 512)
    assert completion.logprobs and completion.generation.top_logprobs == 2


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": USER}, "model"),
    ({"model": "m", "messages": USER, "top_p": 0}, "top_p"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": USER, "temperature": True}, "temperature"),
    ({"model": "m", "messages": USER, "n": 9}, "n"),
    ({"model": "m", "messages": USER, "stop": [""]}, "stop"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": []}, "messages"),
])
def test_bad_chat_fields_are_refused_naming_the_parameter(body, param):
    assert refused(body).param == param


def test_a_body_that_is_not_an_object_is_refused():
    assert "JSON object" in refused(["model"]).message


def test_completion_prompts_are_text_or_token_ids():
    assert completion_prompt("hi") == {"prompt": "hi"}
    assert completion_prompt(["hi"]) == {"prompt": "hi"}
    assert completion_prompt([1, 2, 3]) == {"prompt_ids": (1, 2, 3)}
    assert completion_prompt([[1, 2]]) == {"prompt_ids": (1, 2)}
    for bad in ("", [], ["a", "b"], [1, "2"], [True], None):
        with pytest.raises(APIError):
            completion_prompt(bad)


def test_each_extra_choice_gets_its_own_seed():
    params = parse({"model": "m", "messages": USER, "seed": 10}, True, 512).generation.params
    assert [choice_seed(params, i).seed for i in range(3)] == [10, 11, 12]


def test_a_request_may_choose_its_kv_compaction():
    req = parse({"model": "m", "messages": USER, "kv_compaction": "on", "kv_compaction_ratio": 2}, True, 512)
    assert (req.generation.kv_compaction, req.generation.kv_compaction_ratio) == ("on", 2.0)
    default = parse({"model": "m", "messages": USER}, True, 512).generation
    assert (default.kv_compaction, default.kv_compaction_ratio) == (None, None)
    for bad in ({"kv_compaction": "always"}, {"kv_compaction": 4}, {"kv_compaction_ratio": 1},
                {"kv_compaction_ratio": 1000}):
        assert refused({"model": "m", "messages": USER, **bad}).param == next(iter(bad))
