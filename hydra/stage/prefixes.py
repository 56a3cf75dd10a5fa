"""A stage's prefix cache: the keys and values of prompt blocks it computed, for sessions
that start with the same tokens (a system prompt, a conversation's earlier turns).

Stages never see tokens, so the coordinator names each block of ``PREFIX_BLOCK`` prompt
tokens by a hash chain (``hydra.coordinator.prefix``): a block's hash covers every token up
to its end, so equal hashes mean equal prefixes, and the chain is a radix tree whose edges
are blocks. A session names its prompt's chain when it opens; the stage keeps each block's
keys and values once its session has computed it, and a later session that asks to reuse
the first blocks gets them copied into its cache and starts after them. Entries live while
there is room under ``--cache-gb`` beside the sessions' reservations, least recently used
evicted first. Spans with recurrent (linear-attention) blocks keep none: their state would
have to be copied at every block boundary.
"""

from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache

from protocols.inference import PREFIX_BLOCK


@dataclass(frozen=True)
class Block:
    parent: bytes  # the previous block's hash (b"" for the first)
    keys: tuple[torch.Tensor, ...]  # per attention layer [1, kv_heads, PREFIX_BLOCK, head_dim]
    values: tuple[torch.Tensor, ...]
    size: int  # bytes


class PrefixStore:
    def __init__(self) -> None:
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()
        self.bytes = 0
        self.hits = 0  # blocks restored into sessions
        self.kept = 0  # blocks stored

    def __len__(self) -> int:
        return len(self._blocks)

    def cached(self, chain: tuple[bytes, ...]) -> bool:
        """Whether every block of ``chain`` is here, each following the one before."""
        parent = b""
        for digest in chain:
            block = self._blocks.get(digest)
            if block is None or block.parent != parent:
                return False
            parent = digest
        return True

    def restore(self, chain: tuple[bytes, ...], cache: Cache) -> None:
        """Fill the empty ``cache`` with the blocks of ``chain`` (``cached`` first)."""
        blocks = [self._blocks[digest] for digest in chain]
        for digest in chain:
            self._blocks.move_to_end(digest)
        for layer in range(len(blocks[0].keys)):
            keys = torch.cat([b.keys[layer] for b in blocks], dim=-2)
            values = torch.cat([b.values[layer] for b in blocks], dim=-2)
            cache.update(keys, values, layer)
        self.hits += len(blocks)

    def keep(self, chain: tuple[bytes, ...], cache: Cache, computed: int, room: int) -> int:
        """Store the blocks of ``chain`` that ``cache`` holds (its first ``computed`` tokens)
        and the store lacks, evicting least recently used blocks to stay within ``room``
        bytes; returns how many blocks of the chain are now stored or known."""
        done = min(len(chain), computed // PREFIX_BLOCK)
        for index in range(done):
            digest = chain[index]
            if digest in self._blocks:
                self._blocks.move_to_end(digest)
                continue
            # views, not copies: a session's cache grows into new tensors (``DynamicCache``
            # concatenates), so the tensors these views see are never written again
            span = slice(index * PREFIX_BLOCK, (index + 1) * PREFIX_BLOCK)
            keys = tuple(layer.keys[:, :, span] for layer in cache.layers)
            values = tuple(layer.values[:, :, span] for layer in cache.layers)
            size = sum(t.numel() * t.element_size() for t in keys + values)
            if not self.make_room(room - size):
                return index
            self._blocks[digest] = Block(chain[index - 1] if index else b"", keys, values, size)
            self.bytes += size
            self.kept += 1
        return done

    def make_room(self, limit: int) -> bool:
        """Evict least recently used blocks until at most ``limit`` bytes are held."""
        while self.bytes > limit and self._blocks:
            _, block = self._blocks.popitem(last=False)
            self.bytes -= block.size
        return self.bytes <= limit
