"""A real web on loopback for fetch tests, end-to-end tests, the demo and bench/fetch.py.

`LoopbackWeb` is a threaded HTTP/1.1 server (optionally also HTTPS with a self-signed certificate made at
start) that serves the real pages of ../shared/data/web/trafilatura-eval on any number of virtual hosts
(`hostN.test`, dispatched on the Host header, so the client resolves every `*.test` name to the server's
address), with realistic headers (Date, Server, ETag, Last-Modified, Cache-Control, gzip/br/deflate
Content-Encoding when accepted), plus misbehaving endpoints under `/x/` on every host.

It keeps its own log of every request: (host, path, start, answer), where `start` is when the request had
been read and `answer` when the server began its last write of the response. A client that waits for one response
before sending its next request makes these intervals disjoint, so `max_concurrent(host)` (the most
intervals that overlap) checks politeness from the server's side, free of thread-scheduling noise.

    with LoopbackWeb(latency=0.0) as web:
        url = web.url("host3.test", web.page_path(0))
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import email.utils
import gzip
import hashlib
import http.server
import socket
import ssl
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import brotli

REPO = Path(__file__).resolve().parents[1]
PAGES_DIR = REPO.parent / "shared" / "data" / "web" / "trafilatura-eval"

ENCODINGS = ("gzip", "br", "identity", "deflate")  # hostN.test uses ENCODINGS[N % 4] when the client accepts it
BOMB_BYTES = 64 * 1024 * 1024


def page_files(limit: int | None = None) -> list[Path]:
    files = sorted(PAGES_DIR.glob("*.html.gz"))
    return files[:limit] if limit else files


@dataclasses.dataclass
class Robots:
    status: int = 404
    body: str = ""


@dataclasses.dataclass
class RequestRecord:
    host: str
    path: str
    start: float
    answer: float = 0.0    # when the response's last write began
    end: float = 0.0       # when the handler finished
    user_agent: str = ""
    status: int = 0


class _Page:
    """One real page, kept gzip-compressed as on disk; other encodings made on first use."""

    def __init__(self, path: Path):
        self.path = path
        self.gz = path.read_bytes()
        self._plain: bytes | None = None
        self._enc: dict[str, bytes] = {}
        self.etag = '"' + hashlib.sha1(self.gz).hexdigest()[:16] + '"'
        self.mtime = path.stat().st_mtime

    @property
    def plain(self) -> bytes:
        if self._plain is None:
            self._plain = gzip.decompress(self.gz)
        return self._plain

    def encoded(self, encoding: str) -> bytes:
        if encoding == "gzip":
            return self.gz
        if encoding == "identity":
            return self.plain
        if encoding not in self._enc:
            if encoding == "br":
                self._enc[encoding] = brotli.compress(self.plain, quality=5)
            else:
                self._enc[encoding] = zlib.compress(self.plain, 6)
        return self._enc[encoding]


_BOMBS: dict[str, bytes] = {}


def _bomb(kind: str) -> bytes:
    if kind in _BOMBS:
        return _BOMBS[kind]
    zeros = b"\0" * (1 << 20)
    if kind == "br":
        c = brotli.Compressor(quality=1)
        _BOMBS[kind] = b"".join(c.process(zeros) for _ in range(BOMB_BYTES >> 20)) + c.finish()
    else:
        c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        _BOMBS[kind] = b"".join(c.compress(zeros) for _ in range(BOMB_BYTES >> 20)) + c.flush()
    return _BOMBS[kind]


def self_signed_cert(directory: str, names: tuple[str, ...]) -> tuple[str, str]:
    """A throwaway certificate for `names` (no CA trusts it): (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = _dt.datetime.now(_dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return cert_path, key_path


class LoopbackWeb:
    def __init__(self, addresses: tuple[str, ...] = ("127.0.0.1",), latency: float = 0.0, pages: int | None = None,
                 https: bool = False, robots: dict[str, Robots] | None = None, bombs: bool = True):
        self.addresses, self.latency, self.https, self.bombs = addresses, latency, https, bombs
        self.robots: dict[str, Robots] = dict(robots or {})
        self.files = page_files(pages)
        if not self.files:
            raise FileNotFoundError(f"no pages in {PAGES_DIR}")
        self._pages: dict[str, _Page] = {}
        self._pages_lock = threading.Lock()
        self.log: list[RequestRecord] = []
        self.hits: collections.Counter = collections.Counter()   # (host, path) -> requests
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._servers: list[http.server.ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0
        self.tls_port = 0
        self._tmp = None

    # -- addresses ----------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self.addresses[0]

    def url(self, host: str, path: str, tls: bool = False) -> str:
        return f"https://{host}:{self.tls_port}{path}" if tls else f"http://{host}:{self.port}{path}"

    def page_path(self, index: int) -> str:
        return "/page/" + quote(self.files[index % len(self.files)].name[:-len(".html.gz")])

    def page_bytes(self, index: int) -> bytes:
        return self._page(self.files[index % len(self.files)].name[:-len(".html.gz")]).plain

    def resolve_args(self) -> list[str]:
        """CLI flags that make the fetch stage reach this server for every `*.test` name."""
        return ["--resolve", f"*.test={self.address}", "--allow-network", f"{self.address}/32"]

    def _page(self, stem: str) -> _Page | None:
        with self._pages_lock:
            if stem not in self._pages:
                path = PAGES_DIR / f"{stem}.html.gz"
                if not path.exists():
                    return None
                self._pages[stem] = _Page(path)
            return self._pages[stem]

    def warm(self) -> LoopbackWeb:
        """Load every page and make all its encodings now (otherwise made on first request), so that a
        benchmark's first crawl is not slower than the next ones."""
        for f in self.files:
            page = self._page(f.name[:-len(".html.gz")])
            for encoding in ENCODINGS:
                page.encoded(encoding)
        return self

    def bomb(self, kind: str) -> bytes:
        with self._pages_lock:
            return _bomb(kind)

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> LoopbackWeb:
        if self.bombs:  # made before serving: a bomb must not look slow
            self.bomb("gzip"), self.bomb("br")
        handler = _make_handler(self)
        for _i, address in enumerate(self.addresses):
            server = _Server((address, self.port), handler)
            self.port = server.server_address[1]
            self._serve(server)
        if self.https:
            self._tmp = tempfile.TemporaryDirectory()
            cert, key = self_signed_cert(self._tmp.name, ("secure.test", "*.test"))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            server = _Server((self.address, 0), handler)
            server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
            self.tls_port = server.server_address[1]
            self._serve(server)
        return self

    def _serve(self, server) -> None:
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
        self._servers.append(server)
        self._threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for s in self._servers:
            s.shutdown()
            s.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LoopbackWeb:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the server's own log -----------------------------------------------------------------------------
    def max_concurrent(self, host: str | None = None) -> int:
        """The most requests (to `host`, or to any host) the server was handling at one time: overlapping
        (start, answer) intervals."""
        with self.lock:
            recs = [r for r in self.log if host is None or r.host == host]
        events = sorted([(r.start, 1) for r in recs] + [(r.answer or float("inf"), -1) for r in recs])
        best = now = 0
        for _, step in events:  # at equal times an answer (-1) sorts before a start (+1)
            now += step
            best = max(best, now)
        return best

    def max_concurrent_per_host(self) -> dict[str, int]:
        with self.lock:
            hosts = sorted({r.host for r in self.log})
        return {h: self.max_concurrent(h) for h in hosts}

    def requests_to(self, host: str, path: str | None = None) -> list[RequestRecord]:
        with self.lock:
            return [r for r in self.log if r.host == host and (path is None or r.path == path)]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512

    def handle_error(self, request, client_address):
        pass  # clients that hang up are part of the test


def _make_handler(web: LoopbackWeb):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "nginx/1.24.0"
        sys_version = ""

        def log_message(self, *args):
            pass

        def do_GET(self):
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
            parts = urlsplit(self.path)
            parts = parts._replace(path=unquote(parts.path))
            rec = RequestRecord(host, parts.path, time.monotonic(), user_agent=self.headers.get("User-Agent", ""))
            with web.lock:
                web.log.append(rec)
                web.hits[(host, parts.path)] += 1
            self.close_connection = True
            try:
                if web.latency:
                    time.sleep(web.latency)
                self._route(host, parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}, rec)
            except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                pass
            finally:
                rec.end = time.monotonic()
                rec.answer = rec.answer or rec.end

        # -- helpers ----------------------------------------------------------------------------------
        def _head(self, status, headers, rec):
            rec.status = status
            rec.answer = time.monotonic()
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()

        def _send(self, status, body: bytes, ctype="text/html; charset=utf-8", headers=(), rec=None):
            hs = [("Content-Length", str(len(body)))] + ([("Content-Type", ctype)] if ctype else []) + list(headers)
            self._head(status, hs, rec)
            rec.answer = time.monotonic()
            self.wfile.write(body)

        def _route(self, host, path, q, rec):
            if path == "/robots.txt":
                r = web.robots.get(host, Robots())
                return self._send(r.status, r.body.encode(), "text/plain", rec=rec)
            if path.startswith("/page/"):
                return self._serve_page(host, path[len("/page/"):], rec)
            if path.startswith("/x/"):
                return self._misbehave(host, path[3:], q, rec)
            self._send(404, b"<html><body>not found</body></html>", rec=rec)

        def _serve_page(self, host, stem, rec):
            page = web._page(stem)
            if page is None:
                return self._send(404, b"<html><body>not found</body></html>", rec=rec)
            if self.headers.get("If-None-Match") == page.etag:
                return self._send(304, b"", None, rec=rec)
            accepted = self.headers.get("Accept-Encoding", "")
            digits = "".join(c for c in host if c.isdigit())
            encoding = ENCODINGS[int(digits) % len(ENCODINGS)] if digits else "gzip"
            if encoding not in accepted:
                encoding = "gzip" if "gzip" in accepted else "identity"
            body = page.encoded(encoding)
            headers = [("Date", email.utils.formatdate(usegmt=True)),
                       ("Last-Modified", email.utils.formatdate(page.mtime, usegmt=True)),
                       ("ETag", page.etag), ("Cache-Control", "public, max-age=600"), ("Vary", "Accept-Encoding"),
                       ("X-Frame-Options", "SAMEORIGIN")]
            if encoding != "identity":
                headers.append(("Content-Encoding", encoding))
            # Most servers do not know a static page's charset: the page's <meta> (or the detector) decides.
            self._send(200, body, "text/html", headers, rec=rec)

        def _misbehave(self, host, name, q, rec):
            html = (b"<!DOCTYPE html><html><head><title>t</title></head><body>"
                    + b"<p>Real enough paragraph text for a page.</p>" * 20 + b"</body></html>")
            if name == "ok":
                return self._send(200, html, rec=rec)
            if name == "drip":  # one byte every `every` seconds
                n, every = int(q.get("n", 1000)), float(q.get("every", 0.2))
                self._head(200, [("Content-Type", "text/html"), ("Content-Length", str(n))], rec)
                for _ in range(n):
                    if web.stop.wait(every):
                        return
                    rec.answer = time.monotonic()
                    self.wfile.write(b"x")
                    self.wfile.flush()
                return
            if name == "drip-headers":  # headers that never end
                rec.answer = time.monotonic()
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for i in range(100000):
                    if web.stop.wait(float(q.get("every", 0.2))):
                        return
                    self.wfile.write(b"X-Drip-%d: y\r\n" % i)
                    self.wfile.flush()
                return
            if name == "hang":
                web.stop.wait(float(q.get("s", 30)))
                return
            if name.startswith("status/"):
                status = int(name.split("/")[1])
                headers = [("Retry-After", q["retry_after"])] if "retry_after" in q else []
                return self._send(status, b"<html><body>error</body></html>", headers=headers, rec=rec)
            if name.startswith("flaky/"):  # fails `fail` times (status `status`), then serves the page
                with web.lock:
                    seen = web.hits[(host, "/x/" + name)]
                if seen <= int(q.get("fail", 1)):
                    headers = [("Retry-After", q["retry_after"])] if "retry_after" in q else []
                    return self._send(int(q.get("status", 503)), b"busy", headers=headers, rec=rec)
                return self._send(200, html, rec=rec)
            if name == "redirect":
                return self._send(int(q.get("status", 302)), b"", None, [("Location", q["to"])], rec=rec)
            if name.startswith("chain/"):
                n = int(name.split("/")[1])
                if n == 0:
                    return self._send(200, html, rec=rec)
                return self._send(301, b"", None, [("Location", f"/x/chain/{n - 1}")], rec=rec)
            if name == "loop-a":
                return self._send(302, b"", None, [("Location", "/x/loop-b")], rec=rec)
            if name == "loop-b":
                return self._send(302, b"", None, [("Location", "/x/loop-a")], rec=rec)
            if name == "huge":  # no Content-Length, streamed until the client stops reading
                self._head(200, [("Content-Type", "text/html"), ("Transfer-Encoding", "chunked")], rec)
                chunk = b"<p>" + b"a" * 65530 + b"</p>"
                for _ in range(int(q.get("mib", 64)) * 16):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
                return
            if name == "huge-cl":
                self._head(200, [("Content-Type", "text/html"), ("Content-Length", str(512 << 20))], rec)
                chunk = b"a" * 65536
                for _ in range(8192):
                    self.wfile.write(chunk)
                return
            if name == "cl-short":  # promises more than it sends, then hangs up
                self._head(200, [("Content-Type", "text/html"), ("Content-Length", "100000")], rec)
                self.wfile.write(html[:500])
                return
            if name == "cl-long":  # promises 2000 bytes, sends megabytes
                self._head(200, [("Content-Type", "text/html"), ("Content-Length", "2000")], rec)
                self.wfile.write(html * 1000)
                return
            if name in ("gzip-bomb", "br-bomb"):
                kind = "br" if name == "br-bomb" else "gzip"
                return self._send(200, web.bomb(kind), "text/html", [("Content-Encoding", kind)], rec=rec)
            if name == "bad-gzip":
                return self._send(200, b"\x1f\x8b\x08\x00garbage-not-gzip" * 10, "text/html",
                                  [("Content-Encoding", "gzip")], rec=rec)
            if name == "pdf":  # a big non-HTML body: must be refused from the headers alone
                self._head(200, [("Content-Type", "application/pdf"), ("Content-Length", str(50 << 20))], rec)
                self.wfile.write(b"%PDF-1.4\n")
                web.stop.wait(5)
                return
            if name == "png-as-html":
                png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + bytes(range(256)) * 8
                return self._send(200, png, "text/html; charset=utf-8", rec=rec)
            if name == "no-type":
                return self._send(200, html, None, rec=rec)
            if name == "octet-html":
                return self._send(200, html, "application/octet-stream", rec=rec)
            if name == "octet-binary":
                return self._send(200, bytes(range(256)) * 16, "application/octet-stream", rec=rec)
            if name == "text-plain":
                return self._send(200, b"just text\n" * 50, "text/plain", rec=rec)
            if name == "wrong-charset":  # says utf-8, is windows-1251, says so in <meta>
                body = ("<html><head><meta charset=\"windows-1251\"><title>Новости</title></head><body>"
                        + "<p>Съешь же ещё этих мягких французских булок, да выпей чаю.</p>" * 30
                        + "</body></html>").encode("cp1251")
                return self._send(200, body, "text/html; charset=utf-8", rec=rec)
            if name == "wrong-charset-no-meta":  # says utf-8, is windows-1251, no <meta>
                body = ("<html><head><title>Новости</title></head><body>"
                        + "<p>Съешь же ещё этих мягких французских булок, да выпей чаю. Всё хорошо.</p>" * 30
                        + "</body></html>").encode("cp1251")
                return self._send(200, body, "text/html; charset=utf-8", rec=rec)
            if name == "unknown-charset":
                return self._send(200, "<html><body><p>café</p></body></html>".encode() * 10,
                                  "text/html; charset=klingon-8", rec=rec)
            if name == "bom":
                body = b"\xef\xbb\xbf" + "<html><body><p>naïve café</p></body></html>".encode()
                return self._send(200, body, "text/html; charset=iso-8859-1", rec=rec)
            if name == "reset":  # a connection reset mid-body
                self._head(200, [("Content-Type", "text/html"), ("Content-Length", "100000")], rec)
                self.wfile.write(html[:700])
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                return
            self._send(404, b"<html><body>no such misbehaviour</body></html>", rec=rec)

    return Handler


def write_links(directory, urls: list[str], score: int = 3) -> list[dict]:
    """A `links` dataset (the links stage's contract, docs/formats.md) naming `urls`, as one shard."""
    import pyarrow as pa

    from webtext.runtime import datasets

    try:
        from webtext.links.urls import host_of, normalize_url
    except ImportError:  # pragma: no cover - the links stage lands separately
        normalize_url, host_of = (lambda u: u), (lambda u: urlsplit(u).hostname or "")
    def safe(f, u):
        try:
            return f(u)
        except ValueError:  # a bad link on purpose: the fetch stage must log it, not crash
            return u

    rows = [{"url": u, "key": safe(normalize_url, u), "host": safe(host_of, u), "score": score + i % 7,
             "num_submissions": 1,
             "subreddits": ["test"], "first_created_utc": 1_120_000_000 + i, "submission_ids": [f"s{i}"]}
            for i, u in enumerate(urls)]
    schema = pa.schema([("url", pa.string()), ("key", pa.string()), ("host", pa.string()), ("score", pa.int64()),
                        ("num_submissions", pa.int64()), ("subreddits", pa.list_(pa.string())),
                        ("first_created_utc", pa.int64()), ("submission_ids", pa.list_(pa.string()))])
    Path(directory).mkdir(parents=True, exist_ok=True)
    rows.sort(key=lambda r: r["key"])
    (Path(directory) / datasets.shard_name("links", 0, 1)).write_bytes(datasets.table_bytes(rows, schema))
    return rows


class NonLoopbackConnect(AssertionError):
    pass


def loopback_only(monkeypatch) -> list:
    """Make any connect to a non-loopback address fail loudly (and record it) for the rest of the test, so a
    guard that lets one through is caught before a packet leaves. Returns the list of refused addresses."""
    import ipaddress

    refused: list = []
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                ok = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
            except ValueError:
                ok = False  # a name: resolution inside connect would bypass the client's checks
            if not ok:
                refused.append(host)
                raise NonLoopbackConnect(f"test guard: connect to non-loopback {host!r} refused")

    def connect(sock, address):
        check(sock, address)
        return original_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return original_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return refused
