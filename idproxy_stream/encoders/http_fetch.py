"""Image fetching over HTTP(S) that cannot be turned against the network it runs in (SSRF).

Workers fetch URLs that strangers put into events, from inside the cluster. So:

- HTTP is off unless ``encoder.images.allow_http`` is set; ``http_allowed_hosts`` (when given)
  names the only hosts that may be fetched from (exact names, or ``.example.com`` for a domain
  and its subdomains).
- Every connection — the first and the one after each redirect (at most ``MAX_REDIRECTS``,
  http/https only) — resolves the host once, refuses it unless every address is public
  (no private, loopback, link-local, multicast, reserved or unspecified address, IPv4-mapped
  IPv6 included; ``http_allow_private_addresses`` lifts this, for tests and closed networks),
  and then connects to exactly the address it checked, so a DNS answer that changes between
  check and connect (rebinding) gains nothing.
- Proxy environment variables (``HTTP_PROXY`` ...) are ignored unless
  ``http_use_proxy_env`` is set; then the URL's host is still checked against the allow-list,
  and the address rule applies to the proxy (the connection's far end), which then decides
  where the request goes.

- A fetch has one deadline for all of it (:class:`FetchDeadline`, ``http_timeout_s``):
  connections, redirects, headers and body together. A socket timeout alone bounds each read,
  so a server sending a byte every second held a worker for minutes; at the deadline every
  socket of the fetch is shut down, which ends a blocked read at once.

:func:`fetch_http` raises :class:`HttpRefused` for what the policy refuses (before any byte
is sent) and lets urllib's own errors through for the caller to report.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import threading
import time
import urllib.request
from functools import partial
from urllib.parse import urlsplit

from idproxy_stream.config import ImageInputConfig

MAX_REDIRECTS = 3


class HttpRefused(Exception):
    """The policy refuses this URL or address; the message says which setting allows it."""


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``host`` is on the allow-list (``()`` = any host)."""
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


def is_public_address(address: str) -> bool:
    """Whether an IP address is a public unicast one (IPv4-mapped IPv6 judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check_url(url: str, config: ImageInputConfig) -> None:
    """Refuse a URL that is not http(s)://host/... or whose host is not on the allow-list."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise HttpRefused("only http(s)://host/... URLs are fetched")
    if not host_allowed(parts.hostname, config.http_allowed_hosts):
        raise HttpRefused(
            f"host {parts.hostname[:80]!r} is not in encoder.images.http_allowed_hosts: add it "
            "there"
        )


def vetted_address(host: str, port: int, config: ImageInputConfig) -> tuple:
    """The ``getaddrinfo`` entry to connect to for ``host`` (the URL's, or the proxy's),
    refused unless every address it resolves to is public (or private ones are allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise OSError(f"cannot resolve the host ({type(error).__name__})") from None
    if not infos:
        raise OSError("the host has no address")
    if not config.http_allow_private_addresses:
        for info in infos:
            if not is_public_address(info[4][0]):
                raise HttpRefused(
                    f"host {host[:80]!r} resolves to a private, loopback or link-local "
                    "address: only public hosts are fetched (encoder.images."
                    "http_allow_private_addresses allows others)"
                )
    return infos[0]


class FetchDeadline:
    """One deadline for a whole fetch: sockets registered with it are shut down when it
    passes (a timer thread), so no read of the fetch outlives it.

    Use as a context manager around the fetch; :attr:`expired` tells the caller afterwards
    whether a failure (or a truncated body) was the deadline's doing.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends_at = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._expired = threading.Event()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> FetchDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()

    @property
    def expired(self) -> bool:
        return self._expired.is_set() or time.monotonic() >= self.ends_at

    def remaining(self) -> float:
        """Seconds left; raises ``TimeoutError`` when none are."""
        left = self.ends_at - time.monotonic()
        if left <= 0 or self._expired.is_set():
            raise TimeoutError(f"no whole response within http_timeout_s={self.seconds:g} s")
        return left

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self._expired.is_set():
            self._expire()

    def _expire(self) -> None:
        self._expired.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # closed meanwhile
                sock.shutdown(socket.SHUT_RDWR)


class _VettedConnection(http.client.HTTPConnection):
    """Connects only to the address :func:`vetted_address` checked for the host, within the
    fetch's deadline."""

    def __init__(
        self, *args, image_config: ImageInputConfig, deadline: FetchDeadline, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.image_config = image_config
        self.deadline = deadline

    def connect(self) -> None:
        family, kind, proto, _, address = vetted_address(self.host, self.port, self.image_config)
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(self.deadline.remaining())
            self.deadline.register(sock)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        if self._tunnel_host:
            self._tunnel()


class _VettedHTTPSConnection(_VettedConnection, http.client.HTTPSConnection):
    def connect(self) -> None:
        _VettedConnection.connect(self)
        server_hostname = self._tunnel_host or self.host
        self.sock = self._context.wrap_socket(self.sock, server_hostname=server_hostname)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, config: ImageInputConfig, deadline: FetchDeadline) -> None:
        super().__init__()
        self.image_config = config
        self.deadline = deadline

    def http_open(self, request):
        connection = partial(
            _VettedConnection, image_config=self.image_config, deadline=self.deadline
        )
        return self.do_open(connection, request)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, config: ImageInputConfig, deadline: FetchDeadline) -> None:
        super().__init__()
        self.image_config = config
        self.deadline = deadline

    def https_open(self, request):
        connection = partial(
            _VettedHTTPSConnection, image_config=self.image_config, deadline=self.deadline
        )
        return self.do_open(connection, request, context=self._context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows at most ``MAX_REDIRECTS`` redirects, to http(s) URLs only; the connection of
    each is vetted again."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, config: ImageInputConfig) -> None:
        super().__init__()
        self.image_config = config

    def redirect_request(self, request, fp, code, message, headers, new_url):
        try:
            check_url(new_url, self.image_config)
        except HttpRefused as refused:
            raise HttpRefused(f"a redirect was refused: {refused}") from None
        return super().redirect_request(request, fp, code, message, headers, new_url)


def opener_for(config: ImageInputConfig, deadline: FetchDeadline) -> urllib.request.OpenerDirector:
    """A urllib opener that applies the policy of ``config`` and ``deadline`` to every
    connection."""
    proxies = None if config.http_use_proxy_env else {}  # None: read the environment
    handlers = [
        urllib.request.ProxyHandler(proxies),
        _HTTPHandler(config, deadline),
        _HTTPSHandler(config, deadline),
        _RedirectHandler(config),
    ]
    return urllib.request.build_opener(*handlers)


def fetch_http(url: str, config: ImageInputConfig, deadline: FetchDeadline):
    """Open ``url`` under the policy, within ``deadline`` (started by the caller, who reads
    the body inside it): a response to read from, used as a context manager."""
    check_url(url, config)
    request = urllib.request.Request(url, headers={"User-Agent": "idproxy-stream"})
    return opener_for(config, deadline).open(request, timeout=deadline.remaining())
