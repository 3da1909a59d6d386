"""Streaming readers for NDJSON dumps (Reddit submissions as published by pushshift and Arctic Shift).

`iter_lines(path)` yields a file's lines as bytes, decompressing on the fly by the file's extension:
plain, `.zst` (including `zstd --long=31` files with their 2^31-byte window), `.xz`, `.bz2`, `.gz`. Lines
are split on the byte b"\\n", which never occurs inside a multi-byte UTF-8 character, so a character or a
line split across chunks reaches the caller whole; decoding is left to the JSON parser. Concatenated
streams (pbzip2, multi-member gzip, several zstd frames) are read to the end. A file that ends inside a
compressed stream raises `DumpReadError` naming the file, after every complete line before the damage has
been yielded. Files are opened through `webtext.runtime.fs`, so gs:// paths work too.

Memory: a `.zst` frame made with `--long=31` may refer back 2 GiB, so its decoder keeps that much decoded
history: reading one file costs up to min(decoded size, 2 GiB) on top of the process, whatever the number of
files (measured by bench/links.py). Other formats need a few MB.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterator

import zstandard

from webtext.runtime import fs

CHUNK_BYTES = 1 << 16          # bytes read at a time: larger chunks decompress into slower, page-faulting buffers
ZSTD_MAX_WINDOW = 2 ** 31      # pushshift and Arctic Shift dumps are made with `zstd --long=31`


class DumpReadError(IOError):
    """A dump that cannot be read to its end (truncated or corrupt archive, unreadable file)."""

    def __init__(self, path: str, lines: int, reason: str):
        super().__init__(f"{path}: {reason} (after {lines:,} complete lines)")
        self.path, self.lines, self.reason = path, lines, reason


def _zstd():
    return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj()


def _gzip():
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


_DECOMPRESSORS: dict[str, Callable[[], object]] = {
    ".zst": _zstd, ".zstd": _zstd, ".xz": lzma.LZMADecompressor, ".bz2": bz2.BZ2Decompressor, ".gz": _gzip,
}


def compression_of(path: str) -> str | None:
    """The compression suffix of `path` (".zst", ".xz", ...), or None for a plain file."""
    lower = path.lower()
    return next((s for s in _DECOMPRESSORS if lower.endswith(s)), None)


def _decompressed_chunks(raw, new_decompressor, chunk_bytes: int) -> Iterator[bytes]:
    """Decoded bytes of every stream in `raw`, one after another; EOFError if the last one is cut short."""
    d = new_decompressor()
    pending = False  # bytes fed to `d` that have not yet closed a stream
    while True:
        data = raw.read(chunk_bytes)
        if not data:
            break
        while data:
            out = d.decompress(data)
            pending = True
            if out:
                yield out
            if not d.eof:
                break
            data, pending = d.unused_data, False
            if data.strip(b"\0"):  # another stream follows (zero padding after the last one is allowed)
                d = new_decompressor()
            else:
                d, data = new_decompressor(), b""
    if pending:
        raise EOFError("compressed stream ends early: truncated archive")


def iter_lines(path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Each line of the dump at `path` as bytes, without its "\\n" (a "\\r" before it stays: JSON parsers read
    it as whitespace); blank lines included, so the n-th item is line n. Raises DumpReadError (naming `path`)
    once every complete line before the damage has been yielded."""
    suffix = compression_of(path)
    lines = 0
    try:
        with fs.open_read(path) as raw:
            if suffix is None:
                chunks = iter(lambda: raw.read(chunk_bytes), b"")
            else:
                chunks = _decompressed_chunks(raw, _DECOMPRESSORS[suffix], chunk_bytes)
            partial: list[bytes] = []  # pieces of a line that spans chunks
            for chunk in chunks:
                parts = chunk.split(b"\n")
                if len(parts) == 1:
                    partial.append(chunk)
                    continue
                if partial:
                    partial.append(parts[0])
                    parts[0] = b"".join(partial)
                    partial = []
                tail = parts.pop()
                if tail:
                    partial.append(tail)
                lines += len(parts)
                yield from parts
            if partial:  # a last line without a newline
                yield b"".join(partial)
    except (EOFError, OSError, lzma.LZMAError, zlib.error, zstandard.ZstdError) as e:
        if isinstance(e, DumpReadError):
            raise
        raise DumpReadError(path, lines, f"{type(e).__name__}: {e}") from e
