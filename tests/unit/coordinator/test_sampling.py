"""hydra.coordinator.sampling and params: greedy, top-k/top-p, repetition penalty, bad parameters."""

import pytest
import torch

from hydra.coordinator.params import SamplingParams
from hydra.coordinator.sampling import Sampler
from hydra.errors import InvalidRequest


def test_greedy_picks_the_argmax_and_repetition_penalty_moves_it():
    logits = torch.tensor([1.0, 3.0, 2.9])
    assert Sampler(SamplingParams()).next_token(logits, []) == 1
    penalised = Sampler(SamplingParams(repetition_penalty=1.5))
    assert penalised.next_token(logits, [1]) == 2


def test_top_k_and_top_p_never_sample_outside_the_nucleus():
    logits = torch.tensor([5.0, 4.0, 0.0, -1.0, -2.0])
    top_k = Sampler(SamplingParams(temperature=1.0, top_k=2, seed=0))
    top_p = Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=0))
    assert {top_k.next_token(logits, []) for _ in range(200)} <= {0, 1}
    assert {top_p.next_token(logits, []) for _ in range(200)} == {0}


@pytest.mark.parametrize("bad", [dict(max_tokens=0), dict(temperature=-1), dict(top_p=0),
                                 dict(top_k=-1), dict(repetition_penalty=0), dict(stop=("",))])
def test_invalid_sampling_params_are_refused(bad):
    with pytest.raises(InvalidRequest):
        SamplingParams(**bad)
