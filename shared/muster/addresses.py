"""Which network addresses an outbound request may reach (the SSRF rule), in one place.

A webhook URL is supplied by a user, so a request to it must never land inside the
organisation's network: loopback, private, link-local, reserved, unspecified and multicast
addresses, and names that only mean "this machine", are refused unless the operator turns
MUSTER_WEBHOOK_ALLOW_PRIVATE on. The api applies `is_private_host` when a URL is set; the
delivery worker applies it again at send time to the host and to every address a name
resolves to (a name that is public today can point inside tomorrow). No I/O here.
"""

from __future__ import annotations

import ipaddress

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_private_address(address: str) -> bool:
    """True for an IP literal outside the public internet (or not an IP at all: refuse)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def is_private_host(host: str) -> bool:
    """Loopback, private, link-local, reserved or unspecified addresses, and local names.

    A name that is none of those is not private by itself: what it resolves to is checked
    when a request is made (`is_private_address` on each resolved address).
    """
    name = host.strip("[]").lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost") or name.endswith(".local"):
        return True
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return is_private_address(name)
