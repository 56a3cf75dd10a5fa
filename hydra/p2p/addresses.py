"""Addresses others can dial. A host listening on 0.0.0.0 reports that wildcard as its
address; handed out or announced as is, it would send a dialer to its own machine. It is
replaced by this machine's IPv4 interface addresses (read with getifaddrs, no DNS)."""

from functools import cache

import ifaddr

WILDCARD = "/ip4/0.0.0.0/"


@cache
def interface_ipv4() -> tuple[str, ...]:
    """This machine's IPv4 addresses, loopback last (dialable only from here)."""
    found = {str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4}
    return (*sorted(found - {"127.0.0.1"}), "127.0.0.1")


def dialable(addrs: list[str]) -> list[str]:
    """``addrs`` with every 0.0.0.0 address expanded to one per interface address."""
    out: list[str] = []
    for addr in addrs:
        if addr.startswith(WILDCARD):
            rest = addr[len(WILDCARD):]
            out += [f"/ip4/{ip}/{rest}" for ip in interface_ipv4()]
        else:
            out.append(addr)
    return list(dict.fromkeys(out))
