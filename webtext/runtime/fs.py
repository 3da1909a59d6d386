"""One file-system layer for every stage: local paths and gs:// (or any `scheme://`) behave the same.

Remote paths go through Beam's FileSystems. Local paths go straight to the operating system, as Beam's own
LocalFileSystem does (it is a thin layer over `os` and `io.open`), but without importing Beam: the local
processes of a stage (`processes.TaskPool`) write WARC files and Parquet parts through this module and start
in ~0.3 s instead of the ~0.85 s that importing Beam costs each of them.

Patterns mean what Beam's match makes of them, on every file system, so a pattern means the same on a laptop
and on gs:// and the links stage's fingerprint (`build.input_identity`, Beam's match) covers exactly the files
the stage reads. `glob` (the patterns users give: dumps, WARC files) asks Beam. `glob_or_empty` (the stages'
own patterns) matches a local pattern whose only wildcards are `*`s in its last component itself, as Beam
does: files only, hidden ones included, a path without a wildcard matching itself; any other goes to Beam.
"""

from __future__ import annotations

import glob as _glob
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterable
from typing import IO

import orjson

_WILDCARDS = frozenset("*?[")
_OTHER_WILDCARDS = frozenset("?[")   # Beam lets these match "/" as well: its own match decides


def _filesystems():
    """Beam's FileSystems, imported on first use by a remote path."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _match_beam(pattern: str) -> list[str]:
    return [m.path for m in _filesystems().match([pattern])[0].metadata_list]


def _match_local(pattern: str) -> list[str]:
    """What Beam's match gives for a local pattern whose only wildcards are single `*`s in its last
    component (or that has none), without importing Beam; any other pattern goes to Beam."""
    directory, name = os.path.split(pattern)
    if (not directory or not name or "//" in pattern or "**" in name or _WILDCARDS & set(directory)
            or _OTHER_WILDCARDS & set(name)):
        return _match_beam(pattern)
    if not _WILDCARDS & set(name):
        return [pattern] if os.path.exists(pattern) else []
    return [p for p in _glob.glob(pattern, include_hidden=True) if os.path.isfile(p)]


def join(base: str, *parts: str) -> str:
    if is_remote(base):  # string work only: naming a gs:// path must not need the gcp extra
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def is_remote(path: str) -> bool:
    return "://" in path


def glob(patterns: str | Iterable[str]) -> list[str]:
    """Every file matching any of the patterns, sorted, without repeats. A pattern matching nothing is an error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: set[str] = set()
    for pattern in patterns:
        matches = _match_beam(pattern)
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        found.update(matches)
    return sorted(found)


def glob_or_empty(pattern: str) -> list[str]:
    if not is_remote(pattern):
        return sorted(_match_local(pattern))
    try:
        return sorted(_match_beam(pattern))
    except Exception:  # a missing directory on some file systems raises instead of matching nothing
        return []


def exists(path: str) -> bool:
    return _filesystems().exists(path) if is_remote(path) else os.path.exists(path)


def size(path: str) -> int:
    if is_remote(path):
        return _filesystems().match([path])[0].metadata_list[0].size_in_bytes
    return os.path.getsize(path)


def makedirs(path: str) -> None:
    if not is_remote(path):  # object stores have no directories
        os.makedirs(path, exist_ok=True)


def open_read(path: str) -> IO[bytes]:
    """Raw bytes of a file (no transparent decompression: callers choose their decoder)."""
    if is_remote(path):
        from apache_beam.io.filesystem import CompressionTypes

        return _filesystems().open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "rb")


def open_write(path: str) -> IO[bytes]:
    """A new file (replacing any), its directory made as needed."""
    if is_remote(path):
        from apache_beam.io.filesystem import CompressionTypes

        return _filesystems().create(path, compression_type=CompressionTypes.UNCOMPRESSED)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    return open(path, "wb")


def delete(paths: list[str]) -> None:
    """Delete files, and directories with everything in them. Every path is tried; a path that is not
    there, or any other failure, is an error raised at the end (as Beam's delete does)."""
    remote = [p for p in paths if is_remote(p)]
    if remote:
        _filesystems().delete(remote)
    failed = []
    for path in paths:
        if is_remote(path):
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as e:
            failed.append(e)
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise OSError(f"delete failed: {failed[0]}{more}") from failed[0]


def write_atomic(path: str, data: bytes) -> None:
    """Write under a temporary name, then rename: readers never see a half-written file, and a retried
    write of the same content is harmless."""
    tmp = posixpath.join(posixpath.dirname(path), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
    with open_write(tmp) as f:
        f.write(data)
    rename(tmp, path)


def rename(src: str, dst: str) -> None:
    if not is_remote(dst):
        os.replace(src, dst)
        return
    filesystems = _filesystems()
    if filesystems.exists(dst):
        filesystems.delete([dst])
    filesystems.rename([src], [dst])


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_json(path: str):
    return orjson.loads(read_bytes(path))


def write_json(path: str, value) -> None:
    write_atomic(path, orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
