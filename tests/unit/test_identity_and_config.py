"""hydra.p2p.identity and hydra.config: key file safety, layer parsing, sharding."""

import os
import stat

import pytest

from hydra.config import parse_layers, shard_layers
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


def test_parse_layers():
    assert parse_layers("0:10") == (0, 10)
    for bad in ("10", "5:5", "a:b", "-1:3", "3:1"):
        with pytest.raises(ValueError):
            parse_layers(bad)


def test_shards_cover_all_layers_exactly_once():
    for total in (1, 3, 4, 7):
        spans = [shard_layers(i, total, 30) for i in range(total)]
        assert spans[0][0] == 0 and spans[-1][1] == 30
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert shard_layers(1, 3, 30) == (10, 20)
    with pytest.raises(ValueError):
        shard_layers(3, 3, 30)


def test_port_probe_fails_only_on_a_live_listener():
    import socket

    from hydra.p2p.host import PortInUseError, ensure_port_free

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUseError):
            ensure_port_free("127.0.0.1", port)
    ensure_port_free("127.0.0.1", port)
