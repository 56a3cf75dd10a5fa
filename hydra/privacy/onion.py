"""Onion-wrapped routes and per-hop activation keys.

The coordinator picks, per session: a session id per hop (so colluding stages cannot match
their sessions by id), an activation key per link (coordinator -> s1 -> ... -> sN) and a
return key (sN -> coordinator), all fresh. Stage i's ``HopHeader`` holds its blocks, limits,
its two keys and its successor with the successor's header already sealed; the header itself
is sealed with AES-256-GCM under a key derived (HKDF-SHA256, salted with the hop's session id)
from X25519 between a fresh ephemeral key and the stage's identity-signed static key. Each
stage therefore learns its predecessor (the connection) and successor (its header) only. On a
direct route the last stage's header also holds a collect token: the coordinator connects to
the last stage to collect the sealed output, so that stage learns who the coordinator is; on a
relayed route the stages pass the output back without being able to read it.
"""

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hydra.privacy.channel import RETURN_LABEL, ActivationChannel
from hydra.privacy.keys import KxKey
from hydra.privacy.sealing import KEY_BYTES, derive_key
from protocols import inference
from protocols.codec import Schema, encode
from protocols.errors import ErrorCode, ProtocolError

HEADER_INFO = b"openhydra/onion-header/v1"
HEADER_NONCE = b"\x00" * 12  # each header key seals exactly one message
# A header opens a session within this long of being sealed; stages remember the sealed
# headers they accepted until then, so none opens two sessions (see ReplayGuard).
HEADER_LIFETIME_S = 60.0
CLOCK_SKEW_S = 60.0  # tolerated difference between a coordinator's clock and a stage's
_HEADERS = Schema([inference.HopHeader])


@dataclass(frozen=True)
class WrappedRoute:
    """What the coordinator needs to drive a session over a wrapped route."""

    open: inference.OpenSession  # to send to the first hop
    to_first: ActivationChannel  # carries the coordinator's steps to the first stage
    from_last: ActivationChannel  # carries the last stage's output back
    session_ids: tuple[bytes, ...]  # each hop's session id
    report_keys: tuple[bytes, ...]  # each hop's key for its commitments and reveals
    collect: inference.Collect | None = None  # claims a direct route's output from its last stage


def wrap_route(
    hops: Sequence[inference.Hop],
    kx_keys: Sequence[X25519PublicKey] | None,
    model: str,
    max_length: int,
    dtype: str,
    timeouts: Sequence[float],
    priority: bytes = b"",
    prefix: tuple[bytes, ...] = (),
    reuse: int = 0,
    direct: bool = False,
    compactions: Sequence[inference.Compaction] | None = None,
) -> WrappedRoute:
    """Build the nested headers, innermost (last stage) first. ``kx_keys``: each hop's
    identity-checked X25519 key, or None for an unprotected session (nothing sealed).
    ``priority``: a priority ticket's secret; ``prefix``, ``reuse``: the prompt's block
    hashes and the tokens to restore from them (``hydra.stage.prefixes``), for every stage;
    ``direct``: the last stage sends the output to the coordinator, which collects it;
    ``compactions``: each hop's KV compaction terms (a compacting session)."""
    session_ids = [secrets.token_bytes(inference.SESSION_ID_BYTES) for _ in hops]
    token = secrets.token_bytes(inference.COLLECT_TOKEN_BYTES) if direct else b""
    protect = kx_keys is not None
    keys = [secrets.token_bytes(KEY_BYTES) if protect else b"" for _ in range(len(hops) + 1)]
    report_keys = [secrets.token_bytes(KEY_BYTES) for _ in hops]
    sealed_header, ephemeral = b"", b""
    expires_at = time.time() + HEADER_LIFETIME_S
    for i in range(len(hops) - 1, -1, -1):
        following = hops[i + 1] if i + 1 < len(hops) else None
        header = inference.HopHeader(
            layer_start=hops[i].layer_start,
            layer_end=hops[i].layer_end,
            max_length=max_length,
            dtype=dtype,
            step_timeout=timeouts[i],
            expires_at=expires_at,
            key_in=keys[i],
            key_out=keys[i + 1],
            key_report=report_keys[i],
            next_hop=following,
            next_session_id=b"" if following is None else session_ids[i + 1],
            next_ephemeral=ephemeral,
            next_header=sealed_header,
            priority=priority,
            prefix=prefix,
            reuse=reuse,
            direct=direct,
            collect=token if following is None else b"",
            compaction=compactions[i] if compactions else None,
        )
        kx = None if kx_keys is None else kx_keys[i]
        sealed_header, ephemeral = seal_header(header, kx, session_ids[i])
    first = inference.OpenSession(session_ids[0], model, sealed_header, ephemeral)
    return WrappedRoute(
        first,
        ActivationChannel(keys[0], session_ids[0]),
        ActivationChannel(keys[-1], session_ids[-1], RETURN_LABEL),
        tuple(session_ids),
        tuple(report_keys),
        inference.Collect(session_ids[-1], token) if direct else None,
    )


def seal_header(
    header: inference.HopHeader, kx_public: X25519PublicKey | None, session_id: bytes
) -> tuple[bytes, bytes]:
    """``(header bytes, ephemeral public key)``: sealed for the holder of ``kx_public``, or
    plain when it is None (an unprotected session)."""
    plain = encode(header)
    if kx_public is None:
        return plain, b""
    ephemeral = X25519PrivateKey.generate()
    key = derive_key(ephemeral.exchange(kx_public), session_id, HEADER_INFO)
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
            not_ours = "the session header is not sealed for this peer"
            raise ProtocolError(ErrorCode.BAD_ONION, not_ours) from None
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
