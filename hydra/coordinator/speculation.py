"""Speculative decoding at the coordinator: guess the next tokens, check them all in one step.

A decode step through a pipeline costs about the same for one token or a few: every stage
reads all its weights either way, and every hop is one message. So the coordinator drafts
``k`` tokens, sends the last real token and the drafts as one step, and reads the model's
own next token after each position: drafts are accepted while they equal what the model
would have chosen, and the first position where they differ yields the model's token (when
all match, the last position yields one more). The output is the plain greedy output; only
the number of steps changes. The next step tells every stage to drop the rejected drafts
from its cache (``protocols.inference.Step.rewind``).

Drafts come from prompt lookup (Saxena, 2023): the tokens that followed the latest earlier
occurrence of the context's last few tokens. Free for the coordinator, and right most of the
time when the output quotes, rewrites or edits its input (code, documents, chat history).
When the catalog names a draft model for the requested one (a small model of the same
family and vocabulary) and prompt lookup has nothing, the coordinator runs that model itself
(``DraftModel``): its greedy tokens are right often on any text.
"""

from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache

from hydra.coordinator.sampling import Sampler
from hydra.runtime.shard import ClientHead, StageBlocks, Undo

MAX_NGRAM = 3  # the longest context tail looked up
MIN_NGRAM = 2  # a single repeated token predicts too little to be worth a wider step


@dataclass
class PromptLookup:
    """An index of a generation's context: for each n-gram (MIN..MAX_NGRAM), where its two
    latest occurrences end, so the tail's previous occurrence is found in O(1)."""

    tokens: list[int] = field(default_factory=list)
    latest: dict[tuple[int, ...], int] = field(default_factory=dict)
    before: dict[tuple[int, ...], int] = field(default_factory=dict)

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens)
            for n in range(MIN_NGRAM, min(MAX_NGRAM, end) + 1):
                gram = tuple(self.tokens[end - n : end])
                if gram in self.latest:
                    self.before[gram] = self.latest[gram]
                self.latest[gram] = end

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the longest tail seen before (none if unseen)."""
        end = len(self.tokens)
        for n in range(min(MAX_NGRAM, end - 1), MIN_NGRAM - 1, -1):
            gram = tuple(self.tokens[end - n :])
            seen = self.latest.get(gram)
            if seen == end:
                seen = self.before.get(gram)
            if seen is not None:
                return self.tokens[seen : seen + k]
        return []


def speculable(sampler: Sampler) -> bool:
    """Drafts are checked against the model's choice, which only greedy decoding makes a
    function of the logits (repetition penalty included)."""
    return sampler.params.temperature == 0


def check_drafts(
    head: ClientHead, sampler: Sampler, output: torch.Tensor, context: list[int], drafts: list[int]
) -> list[tuple[torch.Tensor, int]]:
    """The model's tokens after each position of a drafted step (``output`` [1, 1 + k, H]),
    with their logits, up to the first that differs from its draft (or one past the last
    draft): the tokens plain greedy decoding would give. On the compute thread."""
    rows = head.next_logits_of([output[:, i : i + 1] for i in range(output.shape[1])])
    decided, seen = [], list(context)
    for i, row in enumerate(rows):
        token = sampler.next_token(row, seen)
        decided.append((row, token))
        if i == len(drafts) or token != drafts[i]:
            break
        seen.append(token)
    return decided


@dataclass
class DraftModel:
    """A small model run whole at the coordinator, drafting greedily; one per generation (its
    cache follows the generation's context). Blocking: run on the compute thread."""

    blocks: StageBlocks
    head: ClientHead
    cache: Cache = field(init=False)
    fed: list[int] = field(default_factory=list)  # tokens in ``cache``, in order
    start: int = 0  # where the last drafting round began feeding
    undo: Undo | None = None

    def __post_init__(self) -> None:
        self.cache = self.blocks.new_cache()

    def draft(self, context: list[int], k: int) -> list[int]:
        """``k`` greedy tokens after ``context``."""
        self._sync(context)
        pending = context[len(self.fed) :]  # at least the last token
        self.start = len(self.fed)
        feed = self.head.embed(pending)
        self.undo = self.blocks.undo_point(self.cache, feed)
        drafts: list[int] = []
        for _ in range(k):
            hidden = self.blocks.forward(feed, self.cache, len(self.fed))
            self.fed.extend(pending)
            token = int(self.head.next_logits(hidden).argmax())
            drafts.append(token)
            pending, feed = [token], self.head.embed([token])
        if self.undo is not None:  # a rewind reruns everything this round fed
            self.undo.step = self.head.embed(self.fed[self.start :])
        return drafts

    def _sync(self, context: list[int]) -> None:
        """Drop what the cache holds beyond the common start of ``fed`` and ``context``."""
        common = 0
        for mine, theirs in zip(self.fed, context, strict=False):
            if mine != theirs:
                break
            common += 1
        common = min(common, len(context) - 1)  # the last token is fed with the drafting
        if common < len(self.fed):
            self.blocks.rewind(self.cache, self.start, len(self.fed), common, self.undo)
            del self.fed[common:]
