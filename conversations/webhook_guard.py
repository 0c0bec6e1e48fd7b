"""Outbound webhook addresses: calls never go to this machine or the private network unless an
admin allows it for the endpoint (no server-side request forgery).

A call resolves the host name once, checks every address, and then connects to a checked
address (``webhook_post``) instead of letting the HTTP client resolve the name again: a name
that answers with a public address to the check and a private one a moment later (DNS
rebinding) cannot send the call inside. The request still names the host: in the Host header,
as TLS SNI, and as the name the server's certificate must match.
"""

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from urllib3.exceptions import ConnectTimeoutError

# A name with many addresses is tried on a few of them, each up to the call's timeout.
MAX_ADDRESSES_TRIED = 3


def _addresses(host: str) -> list[str]:
    """Every address the host name resolves to, in the resolver's order of preference (an
    address stays itself)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# NAT64 (RFC 6052): a translator on the way reaches the IPv4 address in the last 32 bits of
# an address of the well-known prefix. The local-use prefix (RFC 8215) is a network's own,
# laid out as that network chose: its addresses are private.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
# The reserved block ``::/8``, apart from NAT64 and ``::ffff:0:0/96`` (IPv4-mapped, checked
# as the IPv4 address): IPv4-compatible (``::a.b.c.d``, deprecated by RFC 4291, 2.5.5.1) and
# IPv4-translated (``::ffff:0:a.b.c.d``, RFC 2765) addresses, which a host still tunnelling
# or translating them sends to the IPv4 address inside. No public host has one; Python counts
# most of them as global.
_RESERVED = ipaddress.IPv6Network("::/8")


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _is_private(str(ip.ipv4_mapped))
        if ip in _NAT64_LOCAL or (ip in _RESERVED and ip not in _NAT64_WELL_KNOWN):
            return True
        # An IPv6 address that stands for IPv4 ones (6to4, Teredo, NAT64) reaches them on the
        # way: it is private when one of them is.
        embedded: list[ipaddress.IPv4Address] = []
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64_WELL_KNOWN:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(_is_private(str(v4)) for v4 in embedded):
            return True
    return not ip.is_global or ip.is_multicast


class UnresolvedHost(Exception):
    """The host name does not resolve now: a problem that may pass."""


class RefusedAddress(Exception):
    """A call may never go to this URL; the message says why."""


@dataclass(frozen=True)
class WebhookTarget:
    """Where one call goes: its URL, and the checked addresses it may connect to (none when
    the endpoint allows private addresses: then the name is resolved as usual)."""

    url: str
    addresses: tuple[str, ...] = ()


def webhook_target(url: str, *, allow_private: bool) -> WebhookTarget:
    """Resolve and check ``url`` for one call. Raises ``RefusedAddress`` when a call may never
    go there (a public name that points inside included) and ``UnresolvedHost`` when the name
    does not resolve now."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedAddress("The URL must be http or https with a host.")
    if allow_private:
        return WebhookTarget(url=url)
    try:
        addresses = _addresses(parts.hostname)
    except (socket.gaierror, UnicodeError, OSError) as error:
        raise UnresolvedHost(f"The host {parts.hostname} does not resolve: {error}") from error
    if not addresses:
        raise UnresolvedHost(f"The host {parts.hostname} has no address.")
    private = [a for a in addresses if _is_private(a)]
    if private:
        raise RefusedAddress(
            f"The host {parts.hostname} resolves to a private or local address ({private[0]}); "
            "allow private addresses on the endpoint if that is intended."
        )
    return WebhookTarget(url=url, addresses=tuple(addresses))


def webhook_url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why a call may never go to ``url``, or None. A name that does not resolve raises
    UnresolvedHost."""
    try:
        webhook_target(url, allow_private=allow_private)
    except RefusedAddress as refused:
        return str(refused)
    return None


def webhook_address_problem(url: str, *, allow_private: bool) -> str | None:
    """For forms: the problem with the address now; a name that does not resolve yet is
    accepted (it is checked again on every call)."""
    try:
        return webhook_url_problem(url, allow_private=allow_private)
    except UnresolvedHost:
        return None


class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to one given address whatever the request's host name resolves to; the name
    stays the TLS server name (SNI and certificate check). For a session of one request."""

    def __init__(self, *, address: str) -> None:
        self.address = address
        super().__init__()

    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = host_params["host"]
        host_params["host"] = self.address
        return host_params, pool_kwargs


def _not_connected(error: requests.ConnectionError) -> bool:
    """Whether the request failed before a connection was made, so nothing was sent."""
    reason = getattr(error.args[0] if error.args else None, "reason", None)
    return isinstance(reason, ConnectTimeoutError)  # NewConnectionError is one too


def webhook_post(
    target: WebhookTarget, *, data: bytes, headers: dict[str, str], timeout: float
) -> requests.Response:
    """POST to the target without following redirects. With checked addresses, connect only
    to those, in order, moving to the next only when no connection could be made."""
    if not target.addresses:
        return requests.post(
            target.url, data=data, headers=headers, timeout=timeout, allow_redirects=False
        )
    # The client would otherwise name the address it connects to.
    headers = {**headers, "Host": urlsplit(target.url).netloc.rpartition("@")[2]}
    tried = target.addresses[:MAX_ADDRESSES_TRIED]
    for address in tried[:-1]:
        try:
            return _post_pinned(target.url, address, data=data, headers=headers, timeout=timeout)
        except requests.ConnectionError as error:
            if not _not_connected(error):
                raise
    return _post_pinned(target.url, tried[-1], data=data, headers=headers, timeout=timeout)


def _post_pinned(
    url: str, address: str, *, data: bytes, headers: dict[str, str], timeout: float
) -> requests.Response:
    with requests.Session() as session:
        adapter = _PinnedAddressAdapter(address=address)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session.post(url, data=data, headers=headers, timeout=timeout, allow_redirects=False)
