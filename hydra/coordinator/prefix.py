"""Naming a prompt's prefix to stages without showing it: a salted hash chain per block of
``PREFIX_BLOCK`` tokens (``hydra.stage.prefixes`` keeps those blocks' caches), and the
coordinator's memory of which route holds which blocks.

Block i's hash covers every token up to the end of block i, so two sessions share a block
only if they share everything before it. Blocks inside a shared system prompt are hashed
without a salt: every user of that system prompt reuses them, and a stage learns only that
the same (public) system prompt came again. Every later block is salted with a secret of
this coordinator, so stages cannot tell whether two coordinators sent the same text.
"""

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Sequence

from protocols.inference import MAX_PREFIX_BLOCKS, PREFIX_BLOCK, PREFIX_HASH_BYTES

REMEMBERED_BLOCKS = 16384  # per coordinator: which routes hold which blocks (LRU)


def prefix_chain(tokens: Sequence[int], salt: bytes, public: int = 0) -> tuple[bytes, ...]:
    """One hash per full block of ``tokens`` (at most ``MAX_PREFIX_BLOCKS``); blocks within
    the first ``public`` tokens (a shared system prompt) unsalted."""
    chain: list[bytes] = []
    previous = b""
    for index in range(min(len(tokens) // PREFIX_BLOCK, MAX_PREFIX_BLOCKS)):
        end = (index + 1) * PREFIX_BLOCK
        digest = hashlib.blake2b(previous, digest_size=PREFIX_HASH_BYTES, key=b"" if end <= public else salt)
        digest.update(struct.pack(f"<{PREFIX_BLOCK}q", *tokens[end - PREFIX_BLOCK : end]))
        previous = digest.digest()
        chain.append(previous)
    return tuple(chain)


class PrefixMemory:
    """Which prefix blocks each route's stages were given to keep, as far as this coordinator
    knows (a stage may have evicted them since: it then answers ``prefix_miss``)."""

    def __init__(self, capacity: int = REMEMBERED_BLOCKS) -> None:
        self._known: OrderedDict[tuple[tuple[str, ...], bytes], None] = OrderedDict()
        self._capacity = capacity

    def reusable(self, route: tuple[str, ...], chain: Sequence[bytes]) -> int:
        """How many leading blocks of ``chain`` ``route`` holds."""
        count = 0
        for digest in chain:
            if (route, digest) not in self._known:
                break
            self._known.move_to_end((route, digest))
            count += 1
        return count

    def kept(self, route: tuple[str, ...], chain: Sequence[bytes]) -> None:
        for digest in chain:
            self._known[(route, digest)] = None
            self._known.move_to_end((route, digest))
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    def forget(self, route: tuple[str, ...]) -> None:
        for key in [k for k in self._known if k[0] == route]:
            del self._known[key]
