"""hydra.api.ollama request parsing, in process: options and what /api/generate asks for."""

import pytest

from hydra.api.errors import APIError
from hydra.api.fields import Fields
from hydra.api.ollama import generate_request, options


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


def test_generate_with_a_system_prompt_is_a_chat_unless_raw():
    chat = generate_request(Fields({"prompt": "hi", "system": "be brief"}), 512, "m")
    assert chat is not None and [t["role"] for t in chat.messages] == ["system", "user"]
    raw = generate_request(Fields({"prompt": "hi", "system": "be brief", "raw": True}), 512, "m")
    assert raw is not None and raw.prompt == "hi" and not raw.messages
    plain = generate_request(Fields({"prompt": "hi"}), 512, "m")
    assert plain is not None and plain.prompt == "hi"
