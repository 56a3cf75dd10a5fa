"""A real libp2p host under test control, for speaking raw (possibly hostile) bytes to nodes."""

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import torch
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from hydra.p2p.host import build_host, running_host
from hydra.p2p.streams import FramedStream
from hydra.privacy.onion import WrappedRoute
from hydra.runtime.wire import to_wire
from hydra.verification.commitments import sign_receipt
from protocols import inference
from protocols.ids import KAD
from protocols.verify import tensor_digest
from tests.factories import keypair


@asynccontextmanager
async def client_host() -> AsyncIterator[IHost]:
    host = build_host(keypair())
    async with running_host(host, "127.0.0.1", 0):
        yield host


async def kad_stream(host: IHost, multiaddr: str) -> FramedStream:
    info = info_from_p2p_addr(Multiaddr(multiaddr))
    await host.connect(info)
    return FramedStream(await host.new_stream(info.peer_id, [TProtocol(KAD)]))


def mutate(rng: random.Random, payload: bytes) -> bytes:
    """A valid message with 1-4 random byte edits: overwrite, insert, truncate, append."""
    data = bytearray(payload)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif op == 2 and data:
            del data[rng.randrange(len(data)) :]
        else:
            data += rng.randbytes(rng.randint(1, 16))
    return bytes(data)


@dataclass
class RawSession:
    """A session driven by hand from a raw client host, over ``route`` (from ``wrap_route``):
    it signs each step's receipt as a coordinator does."""

    host: IHost
    route: WrappedRoute
    made: list[bytes] = field(default_factory=list)  # digests of the steps' activations, in order

    @property
    def identity(self) -> KeyPair:
        return KeyPair(self.host.get_private_key(), self.host.get_public_key())

    def step(
        self, position: int, tokens: int = 1, width: int = 64, draft: bool = False, rewind: bool = False,
        compact: int = 0,
    ) -> inference.Step:
        tensor = to_wire(torch.randn(1, tokens, width), "float32")
        self.made.append(tensor_digest(tensor))
        receipt = sign_receipt(self.identity, self.route.session_ids[0], position, self.made[-1])
        hidden, sealed = self.route.to_first.wrap(tensor, position)
        return inference.Step(
            position=position, hidden=hidden, sealed=sealed, receipt=receipt, draft=draft, rewind=rewind,
            compact=compact,
        )
