"""Turning generated token ids into text deltas, honouring stop strings.

Text is re-decoded from all generated ids each step (tokenizers merge bytes across tokens),
and the tail that could still become a stop string, or is an incomplete UTF-8 sequence, is
held back until it is decided, so a streamed reply never shows text a stop string removes."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TextAssembler:
    tokenizer: Any
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters already handed out
    stopped: bool = False
    text: str = ""

    def push(self, token_id: int) -> str:
        """Add one token; the newly decided text (possibly empty)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for stop in self.stop:
            cut = text.find(stop, max(0, self.emitted - len(stop)))
            if cut != -1:
                self.stopped = True
                self.text = text[:cut]
                return self._emit(len(self.text))
        self.text = text
        return self._emit(len(text) - self._undecided_tail(text))

    def finish(self) -> str:
        """Everything still held back, at the end of generation."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        delta = self.text[self.emitted : upto]
        self.emitted = upto
        return delta

    def _undecided_tail(self, text: str) -> int:
        """Characters at the end of ``text`` that may still change: an incomplete UTF-8
        sequence (decoded as U+FFFD) and, before it, the start of a possible stop string."""
        decided = text.rstrip("\ufffd")
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(decided)), longest, -1):
                if decided.endswith(stop[:size]):
                    longest = size
                    break
        return len(text) - len(decided) + longest
