"""Onion-wrapped routes and per-hop activation keys.

The coordinator picks, per session: a session id per hop (so colluding stages cannot match
their sessions by id), an activation key per link (coordinator -> s1 -> ... -> sN) and a
return key (sN -> coordinator), all fresh. Stage i's ``HopHeader`` holds its blocks, limits,
its two keys and its successor with the successor's header already sealed; the header itself
is sealed with AES-256-GCM under a key derived (HKDF-SHA256, salted with the hop's session id)
from X25519 between a fresh ephemeral key and the stage's identity-signed static key. Each
stage therefore learns its predecessor (the connection) and successor (its header) only, and
relays the last stage's sealed output without being able to read it.
"""

import secrets
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hydra.privacy.keys import KxKey
from hydra.privacy.sealing import KEY_BYTES, SealedChannel, derive_key
from protocols import inference
from protocols.codec import Schema, encode
from protocols.errors import ErrorCode, ProtocolError

HEADER_INFO = b"openhydra/onion-header/v1"
HEADER_NONCE = b"\x00" * 12  # each header key seals exactly one message
STEP_LABEL = b"step"
RETURN_LABEL = b"back"
# A header opens a session within this long of being sealed; stages remember the sealed
# headers they accepted until then, so none opens two sessions (see ReplayGuard).
HEADER_LIFETIME_S = 60.0
CLOCK_SKEW_S = 60.0  # tolerated difference between a coordinator's clock and a stage's
_HEADERS = Schema([inference.HopHeader])
_TENSORS = Schema([inference.Tensor])


@dataclass(frozen=True)
class RouteHop:
    peer_id: str
    addrs: tuple[str, ...]
    start: int
    end: int
    kx_public: X25519PublicKey | None  # None only for an unprotected session


@dataclass(frozen=True)
class WrappedRoute:
    """What the coordinator needs to drive a session over a wrapped route."""

    open: inference.OpenSession  # to send to the first hop
    to_first: SealedChannel | None  # seals the coordinator's steps
    from_last: SealedChannel | None  # opens the last stage's output
    return_aad: bytes  # the last hop's session id, bound into every returned message


def wrap_route(
    route: list[RouteHop],
    model: str,
    max_length: int,
    dtype: str,
    timeouts: list[float],
    protect: bool,
) -> WrappedRoute:
    """Build the nested headers, innermost (last stage) first."""
    session_ids = [secrets.token_bytes(inference.SESSION_ID_BYTES) for _ in route]
    keys = [secrets.token_bytes(KEY_BYTES) if protect else b"" for _ in range(len(route) + 1)]
    sealed_header, ephemeral = b"", b""
    expires_at = time.time() + HEADER_LIFETIME_S
    for i in range(len(route) - 1, -1, -1):
        following = route[i + 1] if i + 1 < len(route) else None
        header = inference.HopHeader(
            layer_start=route[i].start,
            layer_end=route[i].end,
            max_length=max_length,
            dtype=dtype,
            step_timeout=timeouts[i],
            expires_at=expires_at,
            key_in=keys[i],
            key_out=keys[i + 1],
            next_hop=None if following is None else inference.Hop(
                following.peer_id, following.addrs, following.start, following.end
            ),
            next_session_id=b"" if following is None else session_ids[i + 1],
            next_ephemeral=ephemeral,
            next_header=sealed_header,
        )
        sealed_header, ephemeral = seal_header(header, route[i], session_ids[i], protect)
    first = inference.OpenSession(session_ids[0], model, sealed_header, ephemeral)
    return WrappedRoute(
        first,
        SealedChannel(keys[0], STEP_LABEL) if protect else None,
        SealedChannel(keys[-1], RETURN_LABEL) if protect else None,
        session_ids[-1],
    )


def seal_header(
    header: inference.HopHeader, hop: RouteHop, session_id: bytes, protect: bool
) -> tuple[bytes, bytes]:
    """``(header bytes, ephemeral public key)``: sealed for ``hop`` or, unprotected, plain."""
    plain = encode(header)
    if not protect:
        return plain, b""
    if hop.kx_public is None:
        raise ValueError(f"{hop.peer_id} announced no X25519 key")
    ephemeral = X25519PrivateKey.generate()
    key = derive_key(ephemeral.exchange(hop.kx_public), session_id, HEADER_INFO)
    sealed = AESGCM(key).encrypt(HEADER_NONCE, plain, session_id)
    return sealed, ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def open_header(request: inference.OpenSession, kx: KxKey) -> inference.HopHeader:
    """This stage's header from ``request``; ``ProtocolError(BAD_ONION)`` if it is not ours."""
    plain = request.header
    if request.ephemeral_key:
        try:
            shared = kx.private.exchange(X25519PublicKey.from_public_bytes(request.ephemeral_key))
            key = derive_key(shared, request.session_id, HEADER_INFO)
            plain = AESGCM(key).decrypt(HEADER_NONCE, request.header, request.session_id)
        except (InvalidTag, ValueError):
            raise ProtocolError(ErrorCode.BAD_ONION, "the session header is not sealed for this peer") from None
    try:
        header = _HEADERS.decode(plain)
    except ProtocolError as exc:
        raise ProtocolError(ErrorCode.BAD_ONION, f"malformed session header: {exc.message}") from None
    assert isinstance(header, inference.HopHeader)
    if bool(header.key_in) != bool(request.ephemeral_key):
        raise ProtocolError(ErrorCode.BAD_ONION, "activation keys must travel in a sealed header")
    return header


@dataclass
class ReplayGuard:
    """Refuses a sealed header a second time. A predecessor that replays its successor's
    ``OpenSession`` would otherwise get a second session under the same keys, whose sealed
    outputs reuse the real session's AES-GCM nonces. Headers expire, so the memory of
    accepted ones stays bounded by the opens of the last few minutes."""

    accepted: dict[bytes, float] = field(default_factory=dict)  # ephemeral key -> forget after

    def admit(self, request: inference.OpenSession, header: inference.HopHeader) -> None:
        now = time.time()
        if header.expires_at < now - CLOCK_SKEW_S:
            raise ProtocolError(ErrorCode.BAD_ONION, "the session header has expired")
        if header.expires_at > now + HEADER_LIFETIME_S + CLOCK_SKEW_S:
            raise ProtocolError(ErrorCode.BAD_ONION, "the session header expires too far ahead")
        if not request.ephemeral_key:
            return  # unsealed: no keys to reuse
        self.accepted = {k: t for k, t in self.accepted.items() if t >= now}
        if request.ephemeral_key in self.accepted:
            raise ProtocolError(ErrorCode.BAD_ONION, "this session header was already used")
        self.accepted[request.ephemeral_key] = header.expires_at + CLOCK_SKEW_S


def step_aad(session_id: bytes, position: int) -> bytes:
    """Bind a sealed step to its session and position (a message moved elsewhere fails)."""
    return session_id + position.to_bytes(8, "big")


def seal_tensor(channel: SealedChannel, tensor: inference.Tensor, session_id: bytes, position: int) -> bytes:
    return channel.seal(encode(tensor), step_aad(session_id, position))


def open_tensor(channel: SealedChannel, sealed: bytes, session_id: bytes, position: int) -> inference.Tensor:
    """The activations in ``sealed``; ``SealError`` if it fails authentication, a typed
    ``ProtocolError`` if what was sealed is not a valid tensor message."""
    tensor = _TENSORS.decode(channel.open(sealed, step_aad(session_id, position)))
    assert isinstance(tensor, inference.Tensor)
    return tensor
