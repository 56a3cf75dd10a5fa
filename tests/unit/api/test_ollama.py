"""hydra.api.ollama request parsing, in process: options and what /api/generate asks for."""

import pytest

from hydra.api.errors import APIError
from hydra.api.fields import Fields
from hydra.api.ollama import fill_template, generate_request, options


def test_ollama_defaults_and_options():
    params = options(Fields({}), 512)
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (512, 0.8, 0.9, 40)
    given = options(Fields({"options": {"num_predict": 5, "temperature": 0, "seed": 3, "stop": ["\n"]}}), 512)
    assert (given.max_tokens, given.temperature, given.seed, given.stop) == (5, 0.0, 3, ("\n",))


@pytest.mark.parametrize("predict", [-1, -2, 0])
def test_num_predict_below_one_means_the_default(predict):
    assert options(Fields({"options": {"num_predict": predict}}), 77).max_tokens == 77


def test_bad_options_are_refused_naming_the_option():
    with pytest.raises(APIError) as info:
        options(Fields({"options": {"temperature": "hot"}}), 512)
    assert info.value.param == "options.temperature"


def test_generate_without_a_prompt_only_loads_the_model():
    assert generate_request(Fields({"model": "m"}), 512, "m") is None


def test_generate_wraps_the_prompt_in_the_chat_template_unless_raw():
    chat = generate_request(Fields({"prompt": "hi", "system": "be brief"}), 512, "m")
    assert chat is not None and [t["role"] for t in chat.messages] == ["system", "user"]
    assert chat.plain_without_template  # a model without a template gets the text as is
    plain = generate_request(Fields({"prompt": "hi"}), 512, "m")
    assert plain is not None and plain.messages == ({"role": "user", "content": "hi"},)
    raw = generate_request(Fields({"prompt": "hi", "system": "be brief", "raw": True}), 512, "m")
    assert raw is not None and raw.prompt == "hi" and not raw.messages


def test_a_request_template_is_filled_in_and_sent_as_it_is():
    body = {"prompt": "hi", "system": "be brief",
            "template": "<s>{{ .System }}</s>\n{{- .Prompt -}}\n{{.Response}}"}
    request = generate_request(Fields(body), 512, "m")
    assert request is not None and request.prompt == "<s>be brief</s>\nhi\n"
    assert fill_template("{{ .Prompt }}", "x", None) == "x"


def test_template_actions_beyond_the_variables_are_refused():
    with pytest.raises(APIError) as info:
        fill_template("{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}", "x", "s")
    assert info.value.param == "template" and "if .System" in info.value.message


def test_kv_compaction_is_an_option():
    request = generate_request(Fields({"prompt": "hi", "options": {"kv_compaction": "off"}}), 512, "m")
    assert request is not None and request.kv_compaction == "off" and request.kv_compaction_ratio is None
    with pytest.raises(APIError) as info:
        generate_request(Fields({"prompt": "hi", "options": {"kv_compaction_ratio": 0.5}}), 512, "m")
    assert info.value.param == "options.kv_compaction_ratio"
