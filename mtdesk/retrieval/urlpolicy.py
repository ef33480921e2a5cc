"""Which web addresses the knowledge base may fetch (SSRF protection).

A URL must be http(s) on a public address. Hostnames are resolved and *every* address
must be public: private (RFC 1918, ULA), loopback, link-local (and with it the cloud
metadata service 169.254.169.254), carrier-grade NAT, multicast, reserved and
unspecified addresses are refused, and so are IPv6 addresses that carry an IPv4 one
(IPv4-mapped, IPv4-compatible, 6to4 ``2002::/16`` and NAT64 ``64:ff9b::/96`` embedding
a private IPv4, every Teredo ``2001::/32`` and local-use NAT64 ``64:ff9b:1::/48``
address) and the deprecated site-local ``fec0::/10``. The same check runs
inside the HTTP client's resolver (so the address connected to is the address checked,
whatever DNS answers next) and again on every redirect hop.

Refusals are :class:`~mtdesk.core.errors.ValidationError` on field ``url`` that say why.
``AddressPolicy(allow_private=True)`` turns the address checks off (tests, closed
networks: ``MTDESK_KB_ALLOW_PRIVATE_URLS``); ``allow`` lets exact ``host:port`` pairs
through (tests of the default policy against a local server).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from mtdesk.core.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "metadata.azure.com"})
_EXTRA_BLOCKED = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
    ipaddress.ip_network("fd00:ec2::/32"),  # AWS metadata over IPv6 (also ULA)
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64 can reach IPv4 internals
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _tunnel_problem(addr: ipaddress.IPv6Address) -> str | None:
    """Why an IPv6 address that tunnels to IPv4 may not be fetched (None: not a tunnel)."""
    if addr.teredo is not None:
        # The server part is public by design; the client part is whatever NAT sits behind.
        return "is a Teredo tunnel address"
    if addr in _NAT64_LOCAL:
        return "is a local-use NAT64 address"
    embedded: ipaddress.IPv4Address | None = None
    if addr.sixtofour is not None:
        embedded = addr.sixtofour
    elif addr in _NAT64 or (addr in _IPV4_COMPATIBLE and int(addr) > 1):
        embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if embedded is None:
        return None
    inner = address_problem(embedded)
    if inner is not None:
        return f"embeds the IPv4 address {embedded}, which {inner}"
    return None


def address_problem(addr: IPAddress) -> str | None:
    """Why an address may not be fetched, or None when it is public."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        else:
            tunnel = _tunnel_problem(addr)
            if tunnel is not None:
                return tunnel
            if addr.is_site_local:
                return "is a site-local address"
    if str(addr) == "169.254.169.254":
        return "is the cloud metadata service"
    if addr.is_loopback:
        return "is a loopback address"
    if addr.is_link_local:
        return "is a link-local address"
    if addr.is_multicast:
        return "is a multicast address"
    if addr.is_unspecified:
        return "is an unspecified address"
    if addr.is_private or any(addr in net for net in _EXTRA_BLOCKED if addr.version == net.version):
        return "is a private address"
    if addr.is_reserved or not addr.is_global:
        return "is a reserved address"
    return None


class AddressPolicy:
    def __init__(self, *, allow_private: bool = False, allow: frozenset[str] = frozenset()) -> None:
        self.allow_private = allow_private
        self.allow = allow

    def _allowed(self, host: str, port: int) -> bool:
        return self.allow_private or f"{host}:{port}" in self.allow

    def check_address(self, host: str, port: int, addr: str) -> None:
        if self._allowed(host, port):
            return
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError as exc:
            raise ValidationError("url", f"{host} resolved to an unusable address") from exc
        problem = address_problem(ip)
        if problem:
            shown = host if host == addr else f"{host} ({addr})"
            raise ValidationError("url", f"refused: {shown} {problem}")

    def check_url(self, url: str) -> tuple[str, int]:
        """Syntax and literal-address checks; returns (host, port)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValidationError("url", "is not a valid URL") from exc
        if parts.scheme not in ("http", "https"):
            raise ValidationError("url", "must start with http:// or https://")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise ValidationError("url", "has no host name")
        if parts.username or parts.password:
            raise ValidationError("url", "must not carry a user name or password")
        port = port or (443 if parts.scheme == "https" else 80)
        if not self._allowed(host, port):
            if host in _METADATA_HOSTS or host.endswith(".internal"):
                raise ValidationError("url", f"refused: {host} is a cloud metadata or internal name")
            try:
                ipaddress.ip_address(host)
            except ValueError:
                pass
            else:
                self.check_address(host, port, host)
        return host, port

    async def check(self, url: str) -> None:
        """Full check: syntax, then every address the host name resolves to."""
        host, port = self.check_url(url)
        if self._allowed(host, port):
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ValidationError("url", f"host {host} does not resolve") from exc
        for info in infos:
            self.check_address(host, port, str(info[4][0]))

    def resolver(self) -> AbstractResolver:
        return _CheckingResolver(self)


class _CheckingResolver(AbstractResolver):
    """aiohttp resolver that refuses to hand out addresses the policy forbids."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for r in results:
            self._policy.check_address(host.rstrip(".").lower(), port, r["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()
