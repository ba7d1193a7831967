"""Who may see the detailed ``/status/`` body: token, source network, or (Django side) staff.

Pure Python.  Forwarded headers are believed only when the direct peer is a trusted proxy;
``X-Forwarded-For`` is read right to left, skipping trusted proxies, so a client cannot
prepend a fake address.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger("django_arena_scale.health")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def bearer_token_matches(authorization: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>`` compared in constant time; False without a token."""
    if not token or not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@functools.lru_cache(maxsize=64)
def parse_networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """Parse CIDRs (bare addresses allowed); invalid entries are logged and skipped."""
    networks: list[Network] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(str(cidr).strip(), strict=False))
        except ValueError:
            logger.warning("Ignoring %r: it is not an IP network such as '10.0.0.0/8'.", cidr)
    return tuple(networks)


def invalid_networks(cidrs: Iterable[Any]) -> list[str]:
    """The entries of ``cidrs`` that are not IP networks (for the system checks)."""
    bad = []
    for cidr in cidrs:
        try:
            ipaddress.ip_network(str(cidr).strip(), strict=False)
        except ValueError:
            bad.append(str(cidr))
    return bad


def parse_ip(value: str | None) -> IPAddress | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: IPAddress | None, networks: Iterable[Network]) -> bool:
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


def client_address(meta: Mapping[str, Any], trusted_proxies: Iterable[str]) -> IPAddress | None:
    """The client's address: ``REMOTE_ADDR``, or the forwarded one when the peer is trusted."""
    remote = parse_ip(meta.get("REMOTE_ADDR"))
    proxies = parse_networks(tuple(str(p) for p in trusted_proxies))
    if remote is None or not in_networks(remote, proxies):
        return remote
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    if forwarded:
        hops = [h for h in (parse_ip(part) for part in str(forwarded).split(",")) if h]
        # Walk from the nearest hop outwards; the first untrusted one is the client.
        for hop in reversed(hops):
            if not in_networks(hop, proxies):
                return hop
        return hops[0] if hops else remote
    real_ip = parse_ip(meta.get("HTTP_X_REAL_IP"))
    return real_ip or remote


def address_allowed(
    meta: Mapping[str, Any], allowed_cidrs: Iterable[str], trusted_proxies: Iterable[str]
) -> bool:
    allowed = parse_networks(tuple(str(c) for c in allowed_cidrs))
    if not allowed:
        return False
    return in_networks(client_address(meta, trusted_proxies), allowed)
