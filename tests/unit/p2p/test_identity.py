"""hydra.p2p.identity: the key file is private, stable, and refused when unsafe or corrupt."""

import os
import stat

import pytest

from hydra.p2p.identity import IdentityError, load, load_or_create, peer_id


def test_key_is_created_private_and_stable(tmp_path):
    path = tmp_path / "home" / "identity.key"
    first = peer_id(load_or_create(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert peer_id(load_or_create(path)) == first == peer_id(load(path))


def test_key_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "identity.key"
    load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="0644"):
        load_or_create(path)


def test_corrupt_key_is_refused(tmp_path):
    path = tmp_path / "identity.key"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="corrupt"):
        load(path)
