"""The HTTP client of the fetch stage: one request hop at a time, every guard on, no surprises.

Why not `requests`: a crawler must connect to the very address it checked (DNS rebinding), stop a body that
drips forever (a total deadline, not only an idle timeout), cap *decoded* bytes (compression bombs), refuse a
type before downloading, and never read proxy settings from the environment. So one hop is: resolve (bounded)
-> check every address against the SSRF policy -> connect to a checked address -> check the peer address again
-> send -> read headers -> decide on type and size -> stream the body through a capped decoder. A watchdog
thread shuts a socket down at its deadline, which wakes any blocked read, headers included.

Failures are `FetchError(error, detail, transient)`; `error` is one of `schema.LOG_ERRORS` (docs/formats.md, Fetch).
"""

from __future__ import annotations

import codecs
import concurrent.futures
import dataclasses
import fnmatch
import heapq
import http.client
import ipaddress
import itertools
import math
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import brotli
from w3lib.encoding import html_body_declared_encoding, http_content_type_encoding, read_bom, resolve_encoding

from webtext import __version__
from webtext.fetch.schema import LOG_ERRORS
from webtext.runtime.warc import header_value

KiB, MiB = 1024, 1024 * 1024

DEFAULT_USER_AGENT = f"webtext/{__version__} (WebText corpus rebuild; robots.txt token: webtext)"
CONNECT_TIMEOUT_S = 10.0    # TCP (and TLS) handshake
READ_TIMEOUT_S = 20.0       # longest silence between two reads
TOTAL_TIMEOUT_S = 60.0      # wall clock for one attempt at a URL: DNS, every redirect hop, headers and body
DNS_TIMEOUT_S = 5.0         # one name lookup
DNS_THREADS = 64            # lookups at once per worker (getaddrinfo blocks; a queued lookup eats its timeout)
MAX_BYTES = 5 * MiB         # decoded body
MAX_REDIRECTS = 5
SNIFF_BYTES = 1024          # decoded bytes looked at to sniff a missing, generic or suspicious type
DETECT_BYTES = 32 * KiB     # body prefix given to the charset detector
CHUNK = 64 * KiB

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Types that say nothing about the content: sniff instead.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown",
                           "unknown/unknown", "application/x-unknown-content-type", "*/*", "text/unknown"})
# Magic numbers of formats that are sometimes served as text/html.
_BINARY_MAGIC = ((b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"\xff\xd8\xff", "JPEG"), (b"%PDF-", "PDF"),
                 (b"PK\x03\x04", "ZIP"), (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ", "xz"),
                 (b"7z\xbc\xaf", "7z"), (b"RIFF", "RIFF"), (b"OggS", "Ogg"), (b"ID3", "MP3"),
                 (b"\x00\x00\x00", "MP4/binary"), (b"\x7fELF", "ELF"), (b"MZ", "EXE"), (b"wOF", "font"))
_HTML_START = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<title", b"<!--", b"<meta",
               b"<div", b"<p", b"<h1", b"<table", b"<a ", b"<br", b"<iframe", b"<style", b"<?xml")


class FetchError(Exception):
    def __init__(self, error: str, detail: str = "", transient: bool = False, status: int | None = None,
                 retry_after: float | None = None, ip: str | None = None):
        assert error in LOG_ERRORS, error
        super().__init__(f"{error}: {detail}")
        self.error, self.detail, self.transient, self.status = error, detail, transient, status
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After), if it did
        self.ip = ip                    # the address connected to, if we got that far


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:  # delta-seconds (an integer by the RFC; a decimal is read as meant)
        seconds = float(value)
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ---------------------------------------------------------------------------------------------------------
# SSRF policy

_EMBEDDED_V4_NETS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPAT = ipaddress.ip_network("::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address can carry to the v4 internet: mapped, 6to4, Teredo, NAT64, compatible."""
    out = []
    if ip.ipv4_mapped:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour:
        out.append(ip.sixtofour)
    if ip.teredo:
        out.extend(ip.teredo)
    if any(ip in net for net in _EMBEDDED_V4_NETS) or (ip in _V4_COMPAT and int(ip) > 1):
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global is False for loopback, private, link-local, CGNAT (100.64/10), unspecified, reserved and
    # documentation ranges; multicast needs its own test (some multicast ranges count as global).
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


@dataclasses.dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a fetched link may reach: public unicast only, unless a range is opened on purpose."""
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))

    def blocked(self, address: str) -> str | None:
        """Why `address` may not be reached (a short phrase), or None when it may."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"not an IP address: {address!r}"
        if ip.version == 6 and ip.ipv4_mapped:  # a socket to ::ffff:a.b.c.d talks to a.b.c.d
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net in self.allow):
            return None
        if _not_public(ip):
            return f"{ip} is not a public address"
        if ip.version == 6:
            for v4 in _embedded_v4(ip):
                if _not_public(v4) and not any(net.version == 4 and v4 in net for net in self.allow):
                    return f"{ip} embeds {v4}, not a public address"
        return None


# ---------------------------------------------------------------------------------------------------------
# Name resolution

def parse_resolve_overrides(specs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`HOST=IP` pairs (HOST may use shell wildcards, e.g. `*.test=127.0.0.1`), like curl's --resolve."""
    out = []
    for spec in specs:
        host, sep, ip = spec.partition("=")
        if not sep or not host or not ip:
            raise ValueError(f"--resolve expects HOST=IP, got {spec!r}")
        try:
            ipaddress.ip_address(ip)
        except ValueError as e:
            raise ValueError(f"--resolve {spec!r}: {e}") from None
        out.append((host.lower(), ip))
    return tuple(out)


class Resolver:
    """getaddrinfo with a deadline (a stuck lookup costs a pool thread, never the caller) and overrides."""

    def __init__(self, overrides: tuple[tuple[str, str], ...] = (), timeout: float = DNS_TIMEOUT_S,
                 threads: int = DNS_THREADS):
        self.overrides, self.timeout = overrides, timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="dns")

    def resolve(self, host: str, port: int, deadline: float) -> list[str]:
        for pattern, ip in self.overrides:
            if fnmatch.fnmatchcase(host, pattern):
                return [ip]
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        wait = min(self.timeout, deadline - time.monotonic())
        if wait <= 0:
            raise FetchError("timeout", "total deadline passed before DNS", transient=True)
        future = self._pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            raise FetchError("dns", f"lookup of {host} took over {wait:.1f}s", transient=True) from None
        except socket.gaierror as e:
            transient = e.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", -11))
            raise FetchError("dns", f"{host}: {e.strerror or e}", transient=transient) from None
        except (UnicodeError, OSError) as e:
            raise FetchError("dns", f"{host}: {e}") from None
        seen, out = set(), []
        for *_, sockaddr in infos:
            if sockaddr[0] not in seen:
                seen.add(sockaddr[0])
                out.append(sockaddr[0])
        return out

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------
# Deadlines

class Watchdog:
    """Shuts sockets down when their deadline passes. A shutdown wakes a thread blocked in recv (it reads
    EOF), so a server that drips one byte a second, in the headers or the body, is cut off on time."""

    def __init__(self):
        self._heap: list[tuple[float, int]] = []
        self._socks: dict[int, socket.socket] = {}
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> int:
        with self._cv:
            token = next(self._ids)
            self._socks[token] = sock
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            self._cv.notify()
            return token

    def unwatch(self, token: int) -> None:
        with self._cv:
            self._socks.pop(token, None)

    def _run(self):
        with self._cv:
            while True:
                while self._heap and self._heap[0][1] not in self._socks:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                sock = self._socks.pop(token)
                try:
                    # The plain socket's shutdown: SSLSocket.shutdown would drop its SSL object under the
                    # reading thread's feet.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass


# ---------------------------------------------------------------------------------------------------------
# Body decoding with a cap on decoded bytes

class _Decoder:
    """Removes one Content-Encoding, producing at most about `limit` bytes per call (memory stays bounded
    whatever the compression ratio); `has_more`/`drain` hand out output held back by the limit."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._z = None
        self._br = None
        self._br_full = False   # the last brotli call stopped at its output limit: more output may be waiting
        self._z_full = False    # the same for zlib
        self._pending = b""     # brotli input received while output was still waiting
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "br":
            self._br = brotli.Decompressor()
        elif encoding not in ("", "identity", "deflate"):  # deflate: zlib-wrapped or raw, seen on first bytes
            raise FetchError("decode", f"unsupported Content-Encoding {encoding!r}")

    def _brotli(self, data: bytes, limit: int) -> bytes:
        cap = min(limit + 1, CHUNK)
        # output_buffer_limit is soft (the buffer may double past it) and more output can be waiting even
        # when can_accept_more_data() is true: a call that filled its buffer is followed by empty-input calls.
        out = self._br.process(data, output_buffer_limit=cap)
        self._br_full = len(out) >= cap or not self._br.can_accept_more_data()
        return out

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decoded bytes for `data`, about `limit` + 1 at most (more may wait: see `has_more`)."""
        enc = self.encoding
        try:
            if enc in ("", "identity"):
                return data
            if enc == "br":
                if self._br_full or self._pending:
                    self._pending += data
                    return self.drain(limit)
                return self._brotli(data, limit)
            if self._z is None:
                self._z = zlib.decompressobj(zlib.MAX_WBITS if _looks_zlib(data) else -zlib.MAX_WBITS)
            tail = self._z.unconsumed_tail
            cap = min(limit + 1, CHUNK)
            out = self._z.decompress(tail + data if tail else data, cap)
            self._z_full = len(out) >= cap  # a long match may still be half-copied inside zlib
            return out
        except (zlib.error, brotli.error) as e:
            raise FetchError("decode", f"bad {enc} data: {e}") from None

    def has_more(self) -> bool:
        if self.encoding == "br":
            return self._br_full or bool(self._pending)
        return bool(self._z is not None and (self._z.unconsumed_tail or self._z_full))

    def drain(self, limit: int) -> bytes:
        if self.encoding == "br":
            try:
                if self._br_full:
                    return self._brotli(b"", limit)
                data, self._pending = self._pending, b""
                return self._brotli(data, limit)
            except brotli.error as e:
                raise FetchError("decode", f"bad br data: {e}") from None
        return self.feed(b"", limit)


def _looks_zlib(data: bytes) -> bool:
    return len(data) >= 2 and (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0


# ---------------------------------------------------------------------------------------------------------
# Content type and charset

def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def binary_signature(head: bytes) -> str | None:
    """The format name if `head` starts like a binary file (or holds NUL bytes outside UTF-16/32)."""
    for magic, name in _BINARY_MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff") or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None
    if b"\x00" in head:
        return "binary (NUL bytes)"
    return None


def looks_like_html(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf\t\n\r\x0c ").lower()
    return text.startswith(_HTML_START) or (b"<html" in text[:SNIFF_BYTES] or b"<body" in text[:SNIFF_BYTES])


def accept_type(declared: str | None, head: bytes, allow_text_plain: bool) -> tuple[str | None, str | None]:
    """(media type kept, None) or (None, why not). `head` is the first decoded bytes (may be empty to judge
    on the header alone: returns ("?", None) when the head is needed)."""
    mt = media_type(declared)
    ok = HTML_TYPES | ({"text/plain"} if allow_text_plain else set())
    if mt not in ok and mt not in GENERIC_TYPES:
        return None, f"type {mt!r}"
    if not head:
        return "?", None
    sig = binary_signature(head[:SNIFF_BYTES])
    if sig:
        return None, f"{sig} content served as {mt or 'no type'!r}"
    if mt in GENERIC_TYPES:
        if looks_like_html(head):
            return "text/html", None
        return None, f"{mt or 'no type'!r} that does not look like HTML"
    return mt, None


def _undecodable_share(body: bytes, encoding: str) -> float:
    """Share of non-ASCII bytes that do not decode in `encoding` (0 for pure ASCII)."""
    sample = body[:256 * KiB]
    if sample.isascii():
        return 0.0
    try:
        sample.decode(encoding)
        return 0.0
    except UnicodeDecodeError:
        pass
    except LookupError:
        return 1.0
    non_ascii = len(sample) - len(sample.translate(None, _HIGH_BYTES)) or 1
    bad = sample.decode(encoding, "replace").count("\ufffd")
    return min(1.0, bad / non_ascii)


_HIGH_BYTES = bytes(range(0x80, 0x100))
MAX_UNDECODABLE = 0.1   # a declared charset that fails on more of the non-ASCII bytes than this is wrong


def _detect(body: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(body[:DETECT_BYTES]).best()
    return resolve_encoding(best.encoding) if best is not None else None


def decide_charset(content_type: str | None, body: bytes,
                   detect: Callable[[bytes], str | None] = _detect) -> tuple[str, str]:
    """(codec name, source): the BOM, else the Content-Type charset, else the `<meta>` declaration, else the
    detector, else utf-8. A declared charset that is unknown or that the body plainly is not (most of its
    non-ASCII bytes fail to decode) is passed over."""
    bom_encoding, _ = read_bom(body)
    if bom_encoding:
        return resolve_encoding(bom_encoding) or bom_encoding, "bom"
    for source, declared in (("header", http_content_type_encoding(content_type or "")),
                             ("meta", html_body_declared_encoding(body[:4 * KiB]))):
        if declared and _known(declared) and _undecodable_share(body, declared) <= MAX_UNDECODABLE:
            return declared, source
    if body.isascii():
        return "ascii", "detector"
    found = detect(body)
    if found and _known(found):
        return found, "detector"
    return "utf-8", "default"


def _known(encoding: str) -> bool:
    try:
        codecs.lookup(encoding)
        return True
    except LookupError:
        return False


# ---------------------------------------------------------------------------------------------------------
# One hop

@dataclasses.dataclass(frozen=True)
class ClientConfig:
    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout: float = CONNECT_TIMEOUT_S
    read_timeout: float = READ_TIMEOUT_S
    total_timeout: float = TOTAL_TIMEOUT_S
    dns_timeout: float = DNS_TIMEOUT_S
    max_bytes: int = MAX_BYTES
    allow_text_plain: bool = False
    allow_networks: tuple[str, ...] = ()
    resolve: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass
class Hop:
    """One request's answer. A redirect has `location`; a success has `body` (decoded) and a charset."""
    url: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    request_headers: list[tuple[str, str]]
    ip: str
    location: str | None = None
    body: bytes = b""
    content_type: str | None = None   # the accepted media type (after sniffing)
    charset: str | None = None
    charset_source: str | None = None

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection on a socket we connected (to a checked address) ourselves."""

    def __init__(self, host: str, port: int, sock: socket.socket):
        super().__init__(host, port)
        self.sock = sock

    def connect(self):  # pragma: no cover - the socket is always given
        raise RuntimeError("connect() must not be called: the socket is pinned")


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HttpClient:
    """Thread-safe: one per worker process, shared by its fetch threads."""

    def __init__(self, config: ClientConfig = ClientConfig()):
        self.config = config
        self.policy = AddressPolicy.from_cidrs(config.allow_networks)
        self.resolver = Resolver(config.resolve, config.dns_timeout)
        self.watchdog = Watchdog()
        self._tls = _tls_context()

    def close(self):
        self.resolver.close()

    # -- connection ---------------------------------------------------------------------------------------
    def _connect(self, scheme: str, host: str, port: int, deadline: float) -> tuple[socket.socket, str]:
        addresses = self.resolver.resolve(host, port, deadline)
        if not addresses:
            raise FetchError("dns", f"{host}: no address")
        allowed = [a for a in addresses if self.policy.blocked(a) is None]
        if not allowed:
            raise FetchError("blocked_address", f"{host} -> {self.policy.blocked(addresses[0])}")
        last: FetchError | None = None
        for address in allowed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError("timeout", "total deadline passed while connecting", transient=True)
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(min(self.config.connect_timeout, remaining))
            try:
                sock.connect((address, port))
            except TimeoutError:
                sock.close()
                last = FetchError("timeout", f"connect to {address}:{port}", transient=True)
                continue
            except OSError as e:
                sock.close()
                last = FetchError("connect", f"{address}:{port}: {e.strerror or e}", transient=True)
                continue
            peer = sock.getpeername()[0]
            why = self.policy.blocked(peer)
            if why:  # the kernel connected somewhere else than asked: never talk to it
                sock.close()
                raise FetchError("blocked_address", f"connected to {why}")
            if scheme == "https":
                try:
                    sock = self._tls.wrap_socket(sock, server_hostname=host)
                except ssl.SSLCertVerificationError as e:
                    sock.close()
                    raise FetchError("tls", f"certificate: {e.verify_message or e}") from None
                except (TimeoutError, ssl.SSLError, OSError) as e:
                    sock.close()
                    if isinstance(e, socket.timeout):
                        raise FetchError("timeout", "TLS handshake", transient=True) from None
                    raise FetchError("tls", str(e)) from None
            sock.settimeout(self.config.read_timeout)
            return sock, peer
        assert last is not None
        raise last

    # -- one hop ------------------------------------------------------------------------------------------
    def request(self, url: str, deadline: float, *, raw: bool = False, max_bytes: int | None = None) -> Hop:
        """GET `url` once. Returns a Hop for 2xx (body read, type and charset decided) and for 3xx with a
        Location; raises FetchError for everything else. `raw` (robots.txt) takes any type and cuts the body
        at `max_bytes` instead of failing."""
        cfg = self.config
        max_bytes = cfg.max_bytes if max_bytes is None else max_bytes
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            host = (parts.hostname or "").rstrip(".")
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as e:
            raise FetchError("bad_url", str(e)) from None
        if scheme not in ("http", "https"):
            raise FetchError("bad_url", f"scheme {scheme!r}")
        if not host:
            raise FetchError("bad_url", "no host")
        try:
            host_idna = host.encode("idna").decode("ascii") if not host.isascii() else host.lower()
        except UnicodeError as e:
            raise FetchError("bad_url", f"host {host!r}: {e}") from None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if any(c in target for c in " \r\n\t") or not target.isascii():
            from w3lib.url import safe_url_string
            target = urlsplit(safe_url_string(url)).path or "/"
            q = urlsplit(safe_url_string(url)).query
            target += f"?{q}" if q else ""
        default_port = 443 if scheme == "https" else 80
        host_header = host_idna if port == default_port else f"{host_idna}:{port}"
        if ":" in host_idna:
            host_header = f"[{host_idna}]" if port == default_port else f"[{host_idna}]:{port}"
        request_headers = [("Host", host_header), ("User-Agent", cfg.user_agent),
                           ("Accept", "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.5,*/*;q=0.1"),
                           ("Accept-Encoding", "gzip, deflate, br"), ("Accept-Language", "en;q=1.0, *;q=0.5"),
                           ("Connection", "close")]

        sock, ip = self._connect(scheme, host_idna, port, deadline)
        token = self.watchdog.watch(sock, deadline)
        conn = _Connection(host_idna, port, sock)
        try:
            try:
                conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
                for k, v in request_headers:
                    conn.putheader(k, v)
                conn.endheaders()
                resp = conn.getresponse()
                hop = Hop(url=url, status=resp.status, reason=resp.reason or "", headers=list(resp.getheaders()),
                          request_headers=request_headers, ip=ip)
                return self._read(resp, hop, deadline, raw, max_bytes)
            except FetchError as e:
                e.ip = ip
                raise
            except Exception as e:
                err = self._classify(e, deadline)
                err.ip = ip
                raise err from None
        finally:
            self.watchdog.unwatch(token)
            conn.close()

    def _classify(self, e: Exception, deadline: float) -> FetchError:
        if time.monotonic() >= deadline:
            return FetchError("timeout", f"total deadline of {self.config.total_timeout:g}s", transient=True)
        if isinstance(e, socket.timeout):
            return FetchError("timeout", f"no data for {self.config.read_timeout:g}s", transient=True)
        if isinstance(e, http.client.IncompleteRead):
            expected = f" of {e.expected + len(e.partial)}" if e.expected else ""
            return FetchError("reset", f"connection closed after {len(e.partial)}{expected} bytes", transient=True)
        if isinstance(e, (http.client.RemoteDisconnected, ConnectionError)):
            return FetchError("reset", f"{type(e).__name__}: {e}", transient=True)
        if isinstance(e, ssl.SSLError):
            return FetchError("tls", str(e))
        if isinstance(e, (http.client.HTTPException, ValueError)):
            return FetchError("protocol", f"{type(e).__name__}: {e}")
        if isinstance(e, OSError):
            return FetchError("reset", f"{type(e).__name__}: {e}", transient=True)
        return FetchError("internal", f"{type(e).__name__}: {e}")

    def _read(self, resp: http.client.HTTPResponse, hop: Hop, deadline: float, raw: bool,
              max_bytes: int) -> Hop:
        status = hop.status
        if 300 <= status < 400 and status != 304:
            location = hop.header("Location")
            if location:
                hop.location = location.strip()
                return hop
            raise FetchError("redirects", f"{status} without Location", status=status)
        if 400 <= status < 600:
            raise FetchError("http_4xx" if status < 500 else "http_5xx", f"{status} {hop.reason}".strip(),
                             transient=status in RETRY_STATUSES, status=status,
                             retry_after=parse_retry_after(hop.header("Retry-After")))
        if not 200 <= status < 300:
            raise FetchError("http_other", f"status {status}", status=status)

        declared = hop.header("Content-Type")
        if not raw:
            kept, why = accept_type(declared, b"", self.config.allow_text_plain)
            if kept is None:
                raise FetchError("content_type", why or "", status=status)
            length = hop.header("Content-Length")
            if length and length.strip().isdigit() and int(length) > max_bytes:
                raise FetchError("too_large", f"Content-Length {int(length)} > {max_bytes}", status=status)

        encoding = (hop.header("Content-Encoding") or "").strip().lower()
        if "," in encoding:
            raise FetchError("decode", f"stacked Content-Encoding {encoding!r}", status=status)
        decoder = _Decoder(encoding)
        parts: list[bytes] = []
        total, sniffed = 0, raw
        while True:
            if time.monotonic() >= deadline:
                raise FetchError("timeout", f"total deadline of {self.config.total_timeout:g}s, "
                                            f"{total} bytes read", transient=True, status=status)
            data = resp.read1(CHUNK)
            if not data and not decoder.has_more():
                break
            out = decoder.feed(data, max_bytes - total) if data else decoder.drain(max_bytes - total)
            while True:
                if out:
                    parts.append(out)
                    total += len(out)
                    if total > max_bytes:
                        if raw:
                            hop.body = b"".join(parts)[:max_bytes]
                            return hop
                        raise FetchError("too_large", f"body over {max_bytes} decoded bytes", status=status)
                if not decoder.has_more():
                    break
                out = decoder.drain(max_bytes - total)
            if not sniffed and (total >= SNIFF_BYTES or not data):
                sniffed = True
                head = b"".join(parts)[:SNIFF_BYTES]
                kept, why = accept_type(declared, head, self.config.allow_text_plain)
                if kept is None:
                    raise FetchError("content_type", why or "", status=status)
            if time.monotonic() >= deadline:
                raise FetchError("timeout", f"total deadline of {self.config.total_timeout:g}s, "
                                            f"{total} bytes read", transient=True, status=status)
        if time.monotonic() >= deadline:  # the watchdog's shutdown reads as a clean end of the body
            raise FetchError("timeout", f"total deadline of {self.config.total_timeout:g}s, {total} bytes read",
                             transient=True, status=status)
        if resp.length:  # http.client's read1 returns b"" when a Content-Length body ends early
            raise FetchError("reset", f"connection closed {resp.length} bytes short of the Content-Length",
                             transient=True, status=status)
        body = b"".join(parts)
        if raw:
            hop.body = body
            return hop
        if not sniffed:
            kept, why = accept_type(declared, body[:SNIFF_BYTES] or b" ", self.config.allow_text_plain)
            if kept is None:
                raise FetchError("content_type", why or "", status=status)
        hop.body = body
        hop.content_type = kept if kept != "?" else media_type(declared) or "text/html"
        hop.charset, hop.charset_source = decide_charset(declared, body)
        return hop
