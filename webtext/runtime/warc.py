"""WARC files: the one module that writes (fetch) and reads (extract, inspect) them, via warcio.

Writing: `RecordWriter` appends request/response record pairs to one WARC file, each record its own gzip
member, and returns where the response landed (file, offset, length) so the fetch log can point at it.
Bodies are stored decoded (transfer and content encodings removed, since the fetcher caps decoded bytes);
the original headers that no longer describe the stored bytes are kept with an `X-Crawler-` prefix, the
convention Common Crawl uses.

Reading: `iter_responses` walks any WARC file (ours, Common Crawl's, ClueWeb's, plain or gzip) and yields
its HTTP responses; a damaged or clipped file ends with one `WarcReadError` naming the file and offset,
after every good record before the damage has been yielded. Seeing that damage reads warcio internals
(`check_warcio` fails loudly where they moved; pyproject bounds warcio to the versions checked).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import io
from collections.abc import Iterator
from typing import IO

from isal import isal_zlib
from warcio.archiveiterator import ArchiveIterator
from warcio.limitreader import LimitReader
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

# Headers that describe the bytes on the wire, not the decoded body we store.
_WIRE_HEADERS = {"content-encoding", "transfer-encoding", "content-length"}


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of a header, by case-insensitive name."""
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def payload_digest(body: bytes) -> str:
    """WARC-style payload digest: sha1, base32."""
    return "sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode("ascii")


@dataclasses.dataclass(frozen=True)
class RecordLocation:
    path: str
    offset: int
    length: int
    digest: str


# Each record is compressed by ISA-L (python-isal), whose levels are 0-3: its level 2 is ~5x faster than
# zlib's level 3 for files ~2% larger (the 922 eval pages: 0.20 against 0.97 CPU-s for 135 MB, 22.4% against
# 21.9% of the raw size), and compression is most of a fetch worker's CPU. Any gzip reader reads the result.
GZIP_LEVEL = 2
GZIP_LEVELS = range(0, 4)


@dataclasses.dataclass(frozen=True)
class EncodedExchange:
    """A request and its response as WARC records, each its own gzip member, ready to append to a file."""
    data: bytes
    response_start: int   # where the response record starts within `data`
    digest: str


def _gzip_member(raw: bytes, level: int) -> bytes:
    """One gzip member (no file name, modification time 0, so the same bytes each time)."""
    c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
    return c.compress(raw) + c.flush()


def encode_exchange(url: str, *, request_headers: list[tuple[str, str]], method: str = "GET", status: int,
                    reason: str, response_headers: list[tuple[str, str]], body: bytes, ip: str | None = None,
                    date: str | None = None, extra: dict[str, str] | None = None,
                    level: int = GZIP_LEVEL) -> EncodedExchange:
    """The records of one exchange, compressed, without touching a file: fetch threads encode in parallel
    (ISA-L releases the GIL) and only the append to the shared file is serialised."""
    from urllib.parse import urlsplit

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=False)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    req_http = StatusAndHeaders(f"{method} {target} HTTP/1.1", request_headers, is_http_request=True)
    warc_headers = {}
    if date:
        warc_headers["WARC-Date"] = date
    if ip:
        warc_headers["WARC-IP-Address"] = ip
    for k, v in (extra or {}).items():
        warc_headers[k] = v
    request = writer.create_warc_record(url, "request", http_headers=req_http,
                                        warc_headers_dict=dict(warc_headers))
    stored = [(k, v) for k, v in response_headers if k.lower() not in _WIRE_HEADERS]
    stored += [(f"X-Crawler-{k}", v) for k, v in response_headers if k.lower() in _WIRE_HEADERS]
    stored.append(("Content-Length", str(len(body))))
    resp_http = StatusAndHeaders(f"{status} {reason}".strip(), stored, protocol="HTTP/1.1")
    # With the length given, warcio computes the payload digest straight from the body (no spooled copy).
    response = writer.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body),
                                         http_headers=resp_http, warc_headers_dict=dict(warc_headers))
    digest = response.rec_headers.get_header("WARC-Payload-Digest")
    request.rec_headers.add_header("WARC-Concurrent-To", response.rec_headers.get_header("WARC-Record-ID"))
    writer.write_record(request)
    req = _gzip_member(buf.getvalue(), level)
    buf.seek(0)
    buf.truncate()
    writer.write_record(response)
    resp = _gzip_member(buf.getvalue(), level)
    return EncodedExchange(req + resp, len(req), digest)


class RecordWriter:
    """Appends records to an open binary file object. Not thread-safe: one writer per file (encode with
    `encode_exchange` in many threads, `append` in one)."""

    def __init__(self, fileobj: IO[bytes], path: str, start_offset: int = 0):
        self._f = fileobj
        self.path = path
        self.offset = start_offset

    def append(self, encoded: EncodedExchange) -> RecordLocation:
        """Write an encoded exchange; returns the response record's location."""
        self._f.write(encoded.data)
        start = self.offset + encoded.response_start
        self.offset += len(encoded.data)
        return RecordLocation(self.path, start, self.offset - start, encoded.digest)

    def write_exchange(self, url: str, **exchange) -> RecordLocation:
        """Write a request and its response (the arguments of `encode_exchange`); returns the response
        record's location."""
        return self.append(encode_exchange(url, **exchange))


@dataclasses.dataclass
class WarcResponse:
    url: str
    offset: int            # of the record in the (compressed) file
    length: int | None     # of the record in the (compressed) file
    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    date: str | None
    ip: str | None
    record_id: str | None

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


class WarcReadError(Exception):
    def __init__(self, path: str, offset: int | None, reason: str):
        super().__init__(f"{path}: damaged WARC at byte {offset}: {reason}")
        self.path, self.offset, self.reason = path, offset, reason


class _CheckedIterator(ArchiveIterator):
    """warcio's iterator, remembering whether the last gzip member was complete when the stream ran out:
    warcio stops silently on a file clipped inside a member (it treats the cut as the end of the file)."""

    clipped = False

    def close(self):
        decompressor = self.reader.decompressor if self.reader is not None else None
        # Only zlib decompressors say whether they saw their member's end; other streams cannot tell.
        if decompressor is not None and getattr(decompressor, "eof", True) is False:
            self.clipped = True
        super().close()


@functools.cache
def check_warcio() -> None:
    """Raise RuntimeError, naming the warcio version, if warcio lacks an internal that `iter_responses` reads to
    see damage warcio itself lets pass: the iterator's `reader.decompressor` and `offset` (`_CheckedIterator`:
    a file clipped inside its last gzip member) and a record stream's `LimitReader.limit` (`_check_complete`:
    a record cut short). Without them a clipped file would be read as whole, silently. Checked once, on the
    first `iter_responses`."""
    from importlib.metadata import version

    it = _CheckedIterator(io.BytesIO(b""))
    found = {"ArchiveIterator.reader.decompressor": hasattr(getattr(it, "reader", None), "decompressor"),
             "ArchiveIterator.offset": isinstance(getattr(it, "offset", None), int),
             "LimitReader.limit": isinstance(getattr(LimitReader(io.BytesIO(), 0), "limit", None), int)}
    missing = [name for name, ok in found.items() if not ok]
    if missing:
        raise RuntimeError(f"warcio {version('warcio')} has no {', '.join(missing)}: webtext.runtime.warc reads "
                           "these to find damaged WARC files; update it to this warcio, or install the warcio "
                           "pyproject.toml allows")


def iter_responses(stream: IO[bytes], path: str, max_body: int | None = None,
                   skipped: dict | None = None) -> Iterator[WarcResponse]:
    """HTTP responses of one WARC stream, in file order. Other record types (request, metadata, warcinfo,
    revisit, resource) are counted by type in `skipped` when given. Bodies longer than `max_body` are cut.
    Raises `WarcReadError` at the first damaged record, after yielding every record before it: a record
    shorter than its Content-Length (a clipped file) is damaged and not yielded, and so is a stream whose
    last gzip member never reached its end."""
    check_warcio()
    it = _CheckedIterator(stream, arc2warc=True)
    offset = None
    try:
        for record in it:
            if record.rec_type != "response" or record.http_headers is None:
                if skipped is not None:
                    skipped[record.rec_type] = skipped.get(record.rec_type, 0) + 1
                it.read_to_end()
                _check_complete(record, path, it.get_record_offset())
                continue
            # Read the body before asking for the offset: warcio's offset/length calls consume the record.
            body = record.content_stream().read(max_body) if max_body else record.content_stream().read()
            offset = it.get_record_offset()
            length = it.get_record_length()
            _check_complete(record, path, offset)
            status_line = record.http_headers.get_statuscode()
            try:
                status = int(status_line)
            except (TypeError, ValueError):
                status = None
            yield WarcResponse(
                url=record.rec_headers.get_header("WARC-Target-URI") or "",
                offset=offset,
                length=length,
                status=status,
                headers=list(record.http_headers.headers),
                body=body,
                date=record.rec_headers.get_header("WARC-Date"),
                ip=record.rec_headers.get_header("WARC-IP-Address"),
                record_id=record.rec_headers.get_header("WARC-Record-ID"),
            )
    except WarcReadError:
        raise
    except Exception as e:  # ArchiveLoadFailed, EOFError, zlib.error: whatever warcio lets escape on damage
        raise WarcReadError(path, offset, f"{type(e).__name__}: {e}") from e
    if it.clipped:
        raise WarcReadError(path, it.offset, "file ends inside a gzip member (clipped)")


def _check_complete(record, path: str, offset: int) -> None:
    """A record whose block ended before its Content-Length: the file was cut inside it."""
    missing = getattr(record.raw_stream, "limit", 0)
    if missing:
        raise WarcReadError(path, offset, f"record truncated: {missing:,} of its {record.length:,} bytes missing "
                                          "(clipped file)")


def read_response_at(stream: IO[bytes], path: str, max_body: int | None = None) -> WarcResponse:
    """The one response record starting at the stream's current position (after a seek to a logged offset)."""
    for response in iter_responses(stream, path, max_body):
        return response
    raise WarcReadError(path, None, "no response record at this offset")
