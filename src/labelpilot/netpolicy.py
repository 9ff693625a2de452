"""The one policy every outbound HTTP request of labelpilot goes through (export, token refresh, media).

Two questions are asked of every URL, on the first request and again on every redirect hop:

1. *May this URL be read at all?* The caller answers (``permit``): the Label Studio client allows its own
   origin, the media fetcher allows Label Studio's media paths and the hosts on LABELPILOT_MEDIA_ALLOWLIST.
2. *May this address be reached?* This module answers: only http(s), no user-info in the URL, and the host
   must resolve to public addresses only. Loopback, private, link-local, shared, reserved, multicast and
   unspecified addresses are refused unless the host was named by the operator: the host of
   LABEL_STUDIO_URL, a host on LABELPILOT_MEDIA_ALLOWLIST, or an entry of LABELPILOT_ALLOW_PRIVATE_HOSTS
   (host names, IPs, CIDR networks, or ``*``). A Label Studio host that only ``/setup`` named is *not*
   trusted for private addresses.

Redirects are followed by hand (httpx's ``follow_redirects`` would not re-check each hop), at most
``max_hops`` of them; the ``Authorization`` header is sent only to the credential origin and is dropped on
any hop that leaves it. Known gap: the address is checked by resolving the name before httpx connects,
which resolves again, so a DNS server that answers differently the second time (rebinding) is not caught;
naming Label Studio by IP or setting LABEL_STUDIO_URL avoids depending on it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from labelpilot.errors import ForbiddenError

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def origin(url: str) -> str:
    """``scheme://host[:port]`` in lower case, with default ports left out (``http://a:80`` == ``http://a``)."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def host_keys(url: str) -> set[str]:
    """The names an allowlist entry may use for the URL's host: ``host`` and ``host:port``."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return {host, f"{host}:{port}"} if port else {host}


def _is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class FetchPolicy:
    """Where outbound requests may go. Build it with :meth:`from_settings` in the server."""

    def __init__(
        self,
        *,
        trusted_hosts: Iterable[str] = (),
        private_ok: Iterable[str] = (),
        max_hops: int = 5,
        resolve: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        self.trusted_hosts = {h.strip().lower() for h in trusted_hosts if h.strip()}
        self.any_private = False
        self.private_nets: list[IPNetwork] = []
        for entry in (e.strip().lower() for e in private_ok):
            if not entry:
                continue
            if entry == "*":
                self.any_private = True
                continue
            try:
                self.private_nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.trusted_hosts.add(entry)
        self.max_hops = max_hops
        self._resolve = resolve or _resolve

    @classmethod
    def open(cls) -> FetchPolicy:
        """No address restriction: for code that builds a client by hand and vouches for every host
        (tests, scripts). The server never uses it."""
        return cls(private_ok=["*"])

    @classmethod
    def from_settings(cls, settings: Any) -> FetchPolicy:
        trusted = set(settings.allowlist)
        if settings.label_studio_url:  # its host:port when the URL names a port, so not every port of the host
            trusted.add(max(host_keys(settings.label_studio_url), key=len))
        private = [p for p in (settings.allow_private_hosts or "").split(",") if p.strip()]
        return cls(trusted_hosts=trusted, private_ok=private, max_hops=settings.max_redirects)

    def check_address(self, url: str) -> None:
        """Raise :class:`ForbiddenError` unless ``url`` is http(s) to a host that may be reached."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ForbiddenError(f"{url}: only http(s) URLs with a host may be fetched", field="url")
        if parts.username is not None or parts.password is not None:
            raise ForbiddenError(f"{url}: URLs with user:password@ are not fetched", field="url")
        if self.any_private or host_keys(url) & self.trusted_hosts:
            return
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError as exc:
            raise ForbiddenError(f"{url}: bad port", field="url") from exc
        try:
            addrs = self._resolve(parts.hostname, port)
        except OSError as exc:
            raise ForbiddenError(f"{url}: host {parts.hostname!r} does not resolve ({exc})", field="url") from exc
        for addr in addrs:
            if _is_public(addr):
                continue
            if any(ipaddress.ip_address(addr.split("%", 1)[0]) in net for net in self.private_nets):
                continue
            raise ForbiddenError(
                f"{url}: {parts.hostname} is a loopback/private address ({addr}); name it in "
                "LABELPILOT_ALLOW_PRIVATE_HOSTS (or LABEL_STUDIO_URL / LABELPILOT_MEDIA_ALLOWLIST) to allow it",
                field="url",
            )

    @contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        permit: Callable[[str, int], None],
        headers: dict[str, str] | None = None,
        credential_origin: str | None = None,
        **kwargs: Any,
    ) -> Iterator[httpx.Response]:
        """``httpx.stream`` with every hop checked: ``permit(url, hop)`` (raises when the URL may not be read)
        and :meth:`check_address`. Yields the first non-redirect response."""
        params = kwargs.pop("params", None)
        if params:
            url = str(httpx.URL(url, params=params))
        hop_url, hop_method = url, method
        for hop in range(self.max_hops + 1):
            permit(hop_url, hop)
            self.check_address(hop_url)
            hop_headers = dict(headers or {})
            if credential_origin is None or origin(hop_url) != credential_origin:
                hop_headers = {k: v for k, v in hop_headers.items() if k.lower() != "authorization"}
            with httpx.stream(hop_method, hop_url, headers=hop_headers, follow_redirects=False, **kwargs) as resp:
                location = resp.headers.get("location")
                if resp.status_code not in REDIRECT_CODES or not location:
                    yield resp
                    return
            hop_url = urljoin(hop_url, location)
            if resp.status_code == 303 or (resp.status_code in (301, 302) and hop_method == "POST"):
                hop_method = "GET"
                kwargs = {k: v for k, v in kwargs.items() if k not in ("json", "content", "data")}
        raise ForbiddenError(f"{url}: more than {self.max_hops} redirects", field="url")


def _resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
