"""One file-system layer for every stage: local paths and gs:// behave the same (Beam's FileSystems)."""

from __future__ import annotations

import posixpath
import uuid
from typing import IO, Iterable

import orjson
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def join(base: str, *parts: str) -> str:
    if is_remote(base):  # string work only: naming a gs:// path must not need the gcp extra
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return FileSystems.join(base, *parts)


def is_remote(path: str) -> bool:
    return "://" in path


def glob(patterns: str | Iterable[str]) -> list[str]:
    """Every file matching any of the patterns, sorted, without repeats. A pattern matching nothing is an error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: set[str] = set()
    for pattern in patterns:
        matches = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        found.update(matches)
    return sorted(found)


def glob_or_empty(pattern: str) -> list[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # a missing directory on some file systems raises instead of matching nothing
        return []


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def size(path: str) -> int:
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def makedirs(path: str) -> None:
    if not is_remote(path):  # object stores have no directories
        try:
            FileSystems.mkdirs(path)
        except OSError:
            pass  # already there


def open_read(path: str) -> IO[bytes]:
    """Raw bytes of a file (no transparent decompression: callers choose their decoder)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def open_write(path: str) -> IO[bytes]:
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def delete(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(paths)


def write_atomic(path: str, data: bytes) -> None:
    """Write under a temporary name, then rename: readers never see a half-written file, and a retried
    write of the same content is harmless."""
    tmp = posixpath.join(posixpath.dirname(path), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
    with open_write(tmp) as f:
        f.write(data)
    rename(tmp, path)


def rename(src: str, dst: str) -> None:
    if is_remote(dst) and FileSystems.exists(dst):
        FileSystems.delete([dst])
    FileSystems.rename([src], [dst])


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_json(path: str):
    return orjson.loads(read_bytes(path))


def write_json(path: str, value) -> None:
    write_atomic(path, orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
