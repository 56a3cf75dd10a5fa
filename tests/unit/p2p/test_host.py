"""hydra.p2p.host: the port probe before listening."""

import pytest


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
