"""Outbound webhook addresses: calls never go to this machine or the private network unless an
admin allows it for the endpoint (no server-side request forgery)."""

import ipaddress
import socket
from urllib.parse import urlsplit


def _addresses(host: str) -> list[str]:
    """Every address the host name resolves to (an address stays itself)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


class UnresolvedHost(Exception):
    """The host name does not resolve now: a problem that may pass."""


def webhook_url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why a call may never go to ``url``, or None. Host names are resolved, so a public name
    that points inside is refused too. A name that does not resolve raises UnresolvedHost."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "The URL must be http or https with a host."
    if allow_private:
        return None
    try:
        addresses = _addresses(parts.hostname)
    except (socket.gaierror, UnicodeError, OSError) as error:
        raise UnresolvedHost(f"The host {parts.hostname} does not resolve: {error}") from error
    private = [a for a in addresses if _is_private(a)]
    if private:
        return (
            f"The host {parts.hostname} resolves to a private or local address ({private[0]}); "
            "allow private addresses on the endpoint if that is intended."
        )
    return None


def webhook_address_problem(url: str, *, allow_private: bool) -> str | None:
    """For forms: the problem with the address now; a name that does not resolve yet is
    accepted (it is checked again on every call)."""
    try:
        return webhook_url_problem(url, allow_private=allow_private)
    except UnresolvedHost:
        return None
