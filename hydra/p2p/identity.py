"""The node's Ed25519 identity key: ``$HYDRA_HOME/identity.key``, 32 raw seed bytes, mode 0600.

The key *is* the peer ID, so it must survive restarts and must not leak: a key file that group
or others can read is refused rather than silently used or "fixed"."""

import os
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from hydra.errors import ConfigError

SEED_BYTES = 32


class IdentityError(ConfigError):
    """The identity key cannot be used (unsafe permissions, corrupt, unreadable)."""


def load_or_create(path: Path) -> KeyPair:
    """Load the key at ``path``, or create it (0600, parent 0700) if it does not exist."""
    try:
        return _load_or_create(path)
    except OSError as exc:  # an unwritable home, a directory where the key should be, ...
        raise IdentityError(f"cannot use identity key {path}: {exc.strerror or exc}") from None


def _load_or_create(path: Path) -> KeyPair:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        seed = Ed25519PrivateKey.new().to_bytes()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return load(path)
        with os.fdopen(fd, "wb") as f:
            f.write(seed)
    return load(path)


def load(path: Path) -> KeyPair:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise IdentityError(
            f"refusing identity key {path}: mode {mode:04o} lets other users read it; "
            f"run `chmod 600 {path}` if the key is still secret, or delete it to make a new one"
        )
    seed = path.read_bytes()
    if len(seed) != SEED_BYTES:
        raise IdentityError(f"identity key {path} is corrupt: {len(seed)} bytes, expected 32")
    private = Ed25519PrivateKey.from_bytes(seed)
    return KeyPair(private, private.get_public_key())


def peer_id(keypair: KeyPair) -> ID:
    return ID.from_pubkey(keypair.public_key)


def signed_by(peer: str, message: bytes, signature: bytes) -> bool:
    """Whether ``peer``'s identity (the Ed25519 key its peer ID embeds) signed ``message``."""
    try:
        identity = ID.from_base58(peer).extract_public_key()
        return isinstance(identity, Ed25519PublicKey) and identity.verify(message, signature)
    except Exception:  # noqa: BLE001 - a malformed peer ID or signature: not signed, whatever the cause
        return False
