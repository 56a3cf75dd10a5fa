"""Prompt-lookup drafts, and checking a drafted step: the tokens greedy decoding gives."""

import torch

from hydra.coordinator.params import SamplingParams
from hydra.coordinator.sampling import Sampler
from hydra.coordinator.speculation import PromptLookup, check_drafts, speculable


def lookup_of(tokens: list[int]) -> PromptLookup:
    lookup = PromptLookup()
    lookup.extend(tokens)
    return lookup


def test_drafts_follow_the_latest_earlier_occurrence_of_the_longest_tail() -> None:
    assert lookup_of([1, 2, 3, 9, 1, 2, 3, 8, 5, 1, 2, 3]).draft(3) == [8, 5, 1]  # latest, 3-gram
    assert lookup_of([7, 2, 3, 4, 5, 9, 2, 3]).draft(2) == [4, 5]  # a 2-gram when no 3-gram
    assert lookup_of([5, 6, 1, 2]).draft(4) == []  # unseen tail
    assert lookup_of([4, 4]).draft(3) == []  # a 1-gram is not enough
    assert lookup_of([1, 2, 1, 2]).draft(5) == [1, 2]  # up to the end of what is known
    grows = lookup_of([1, 2, 3])
    grows.extend([1, 2])
    assert grows.draft(1) == [3]


class Head:
    """A client head whose logits at position i favour ``choices[i]``."""

    def __init__(self, choices: list[int], vocab: int = 10) -> None:
        self.choices, self.vocab = choices, vocab

    def next_logits_of(self, hiddens: list[torch.Tensor]) -> torch.Tensor:
        rows = torch.zeros(len(hiddens), self.vocab)
        for i, hidden in enumerate(hiddens):
            rows[i, self.choices[int(hidden.flatten()[0])]] = 1.0
        return rows


def drafted_output(tokens: int) -> torch.Tensor:
    return torch.arange(tokens, dtype=torch.float32).reshape(1, tokens, 1)


def test_drafts_are_accepted_up_to_the_first_difference_which_gives_the_models_token() -> None:
    greedy = Sampler(SamplingParams())
    decided = check_drafts(Head([4, 5, 6, 7]), greedy, drafted_output(4), [1], [4, 5, 9])
    assert [token for _, token in decided] == [4, 5, 6]  # 4, 5 accepted; 6 instead of 9
    decided = check_drafts(Head([4, 5, 6, 7]), greedy, drafted_output(4), [1], [4, 5, 6])
    assert [token for _, token in decided] == [4, 5, 6, 7]  # all accepted, and one more
    decided = check_drafts(Head([3, 5]), greedy, drafted_output(2), [1], [4])
    assert [token for _, token in decided] == [3]


def test_only_greedy_decoding_speculates() -> None:
    assert speculable(Sampler(SamplingParams(repetition_penalty=1.3)))
    assert not speculable(Sampler(SamplingParams(temperature=0.7, seed=1)))
