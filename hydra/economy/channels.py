"""Payment channels: signing states, and each side's book of the channels it is in.

Rules the token log enforces on close live in ``hydra.economy.tokenlog``; these are the
constants both sides and the log share."""

from collections.abc import Sequence

from libp2p.crypto.keys import KeyPair

from hydra.p2p.identity import signed_by
from protocols.channel import ChannelState

TTL_S = 15 * 60.0  # a channel takes no updates after this; it must be closed and settled
CHALLENGE_S = 120.0  # after a unilateral close, the other side's time to answer with a later state
MAX_CHANNELS = 8  # open channels per peer, as payer or payee

STATE_DOMAIN = b"openhydra/channel-state/v1\x00"


def sign_state(identity: KeyPair, state: ChannelState) -> bytes:
    return identity.private_key.sign(STATE_DOMAIN + state.to_bytes())


def state_signed(peer: str, state: ChannelState, signature: bytes) -> bool:
    return signed_by(peer, STATE_DOMAIN + state.to_bytes(), signature)


def co_signed(state: ChannelState, opener: str, peer: str, signatures: Sequence[bytes]) -> bool:
    """Whether ``signatures`` are the opener's and the peer's, in that order, over ``state``."""
    return (
        len(signatures) == 2
        and state_signed(opener, state, signatures[0])
        and state_signed(peer, state, signatures[1])
    )
