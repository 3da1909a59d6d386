"""Check a token shard directory against its manifest.

Checks, per shard: the path stays inside the directory, the file exists with the size and sha256 the manifest
records, it is an Arrow IPC file of the shard schema and dtype, its document offsets start at 0, never
decrease and end at the token count, every document ends with <|endoftext|>, every id is below the
vocabulary size, and its token and document counts match the manifest; then the per-split and overall totals,
the tokenizer copy's fingerprint, and that no shard file lies in the directory unlisted. Each problem is one
line `FILE: problem`; the exit status is 1 if there is any.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa

from webtext.encode import shards

EXAMPLE = """  webtext verify out/shards"""

HASH_CHUNK = 1 << 22  # bytes hashed at a time: memory stays flat on 200 MB shards


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    tokens: int = 0
    documents: int = 0

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK):
            h.update(block)
    return h.hexdigest()


def check_shard_contents(path: str, name: str, dtype: str, vocab_size: int, eot_id: int,
                         report: Report) -> tuple[int, int] | None:
    """(tokens, documents) of a readable shard after checking its structure and ids; None if unreadable."""
    try:
        shard = shards.open_shard(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, KeyError, ValueError, TypeError) as e:
        report.problem(name, f"not a readable Arrow shard ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        return None
    want = shards.schema(dtype)
    got = shard.table.schema
    if got.remove_metadata() != want.remove_metadata():
        report.problem(name, f"schema {got.remove_metadata().to_string(show_schema_metadata=False)!r} "
                             f"is not the shard schema for {dtype}".replace("\n", "; "))
        return None
    if shard.dtype != dtype:
        report.problem(name, f"dtype {shard.dtype} but the manifest says {dtype}")
        return None
    offsets, tokens = shard.offsets.astype(np.int64), shard.tokens
    if len(offsets) == 0 or offsets[0] != 0:
        report.problem(name, "document offsets do not start at 0")
        return None
    if np.any(np.diff(offsets) < 0):
        i = int(np.argmax(np.diff(offsets) < 0))
        report.problem(name, f"document offsets decrease at document {i} ({offsets[i]} -> {offsets[i + 1]})")
        return None
    if offsets[-1] != len(tokens):
        report.problem(name, f"last offset {offsets[-1]} != token count {len(tokens)}")
        return None
    if len(tokens):
        top = int(tokens.max())
        if top >= vocab_size:
            at = int(np.argmax(tokens >= vocab_size))
            report.problem(name, f"token id {top} out of range (vocab size {vocab_size}), first at token {at}")
            return None
    ends = offsets[1:]
    lengths = np.diff(offsets)
    if np.any(lengths == 0):
        report.problem(name, f"document {int(np.argmax(lengths == 0))} is empty (no <|endoftext|>)")
        return None
    if len(ends) and np.any(tokens[ends - 1] != eot_id):
        i = int(np.argmax(tokens[ends - 1] != eot_id))
        report.problem(name, f"document {i} does not end with the end-of-text id {eot_id}")
        return None
    if shard.table.column("doc_id").null_count:
        report.problem(name, "a document has no doc_id")
        return None
    return len(tokens), shard.num_documents


def _load_manifest(directory: str, report: Report) -> dict | None:
    path = os.path.join(directory, shards.MANIFEST)
    if not os.path.isfile(path):
        report.problem(path, "missing: not a finished shard directory (run `webtext encode`)")
        return None
    try:
        manifest = orjson.loads(open(path, "rb").read())
    except orjson.JSONDecodeError as e:
        report.problem(path, f"not valid JSON ({e})")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != shards.FORMAT:
        report.problem(path, f"not a {shards.FORMAT} manifest")
        return None
    if manifest.get("format_version") != shards.FORMAT_VERSION:
        report.problem(path, f"format_version {manifest.get('format_version')!r}, this webtext reads "
                             f"{shards.FORMAT_VERSION}")
        return None
    for key in ("tokenizer", "dtype", "splits", "totals"):
        if key not in manifest:
            report.problem(path, f"no {key!r}")
            return None
    return manifest


def _check_tokenizer(directory: str, tokenizer: dict, report: Report) -> None:
    from webtext.tokenizer import bpe

    try:
        copy = shards.safe_member(directory, tokenizer.get("file", shards.TOKENIZER_FILE))
    except ValueError as e:
        report.problem(shards.MANIFEST, str(e))
        return
    if not os.path.isfile(copy):
        report.problem(copy, "missing: the shard directory must hold the tokenizer that made it")
        return
    try:
        tok = bpe.load(copy)
    except (ValueError, OSError) as e:  # either names the file
        report.problems.append(str(e))
        return
    if bpe.tokenizer_fingerprint(tok) != tokenizer.get("fingerprint"):
        report.problem(copy, "fingerprint differs from the manifest's: a different tokenizer made these shards")
    if bpe.vocab_size(tok) != tokenizer.get("vocab_size"):
        report.problem(copy, f"vocab size {bpe.vocab_size(tok)} but the manifest says {tokenizer.get('vocab_size')}")
    if tok.token_to_id(tokenizer.get("eot_token", bpe.EOT_TOKEN)) != tokenizer.get("eot_id"):
        report.problem(copy, f"end-of-text id is not the manifest's {tokenizer.get('eot_id')}")


def verify(directory: str) -> Report:
    """Every problem with the shard directory, one line each (an empty list means it is sound)."""
    directory = directory.rstrip("/") or "/"
    report = Report()
    manifest = _load_manifest(directory, report)
    if manifest is None:
        return report
    tokenizer, dtype = manifest["tokenizer"], manifest["dtype"]
    if dtype not in ("uint16", "uint32"):
        report.problem(shards.MANIFEST, f"unknown dtype {dtype!r}")
        return report
    vocab_size, eot_id = int(tokenizer.get("vocab_size", 0)), int(tokenizer.get("eot_id", -1))
    if shards.dtype_for_vocab(vocab_size) != dtype and vocab_size > 1 << 16:
        report.problem(shards.MANIFEST, f"dtype {dtype} cannot hold a vocabulary of {vocab_size}")
    _check_tokenizer(directory, tokenizer, report)

    listed: set[str] = set()
    totals = {"tokens": 0, "documents": 0, "bytes": 0}
    for split, info in sorted(manifest["splits"].items()):
        split_tokens = split_docs = 0
        for entry in info.get("shards", []):
            rel = str(entry.get("path", ""))
            try:
                path = shards.safe_member(directory, rel)
            except ValueError as e:
                report.problem(shards.MANIFEST, f"refused: {e}")
                continue
            listed.add(os.path.normpath(path))
            if not shards.SHARD_RE.match(os.path.basename(rel)):
                report.problem(rel, "not a shard file name (SPLIT-NNNNN-of-NNNNN.arrow)")
            report.shards += 1
            split_tokens += int(entry.get("tokens", 0))
            split_docs += int(entry.get("documents", 0))
            totals["tokens"] += int(entry.get("tokens", 0))
            totals["documents"] += int(entry.get("documents", 0))
            totals["bytes"] += int(entry.get("bytes", 0))
            if not os.path.isfile(path):
                report.problem(rel, "missing")
                continue
            size = os.path.getsize(path)
            if size != entry.get("bytes"):
                what = "truncated" if size < int(entry.get("bytes", 0)) else "longer than recorded"
                report.problem(rel, f"{what}: {size:,} bytes, the manifest says {entry.get('bytes'):,}")
                continue
            if _sha256(path) != entry.get("sha256"):
                report.problem(rel, "sha256 mismatch: the file's bytes changed since it was written")
                continue
            counted = check_shard_contents(path, rel, dtype, vocab_size, eot_id, report)
            if counted is None:
                continue
            tokens, documents = counted
            report.tokens += tokens
            report.documents += documents
            if tokens != entry.get("tokens") or documents != entry.get("documents"):
                report.problem(rel, f"holds {tokens:,} tokens / {documents:,} documents, the manifest says "
                                    f"{entry.get('tokens'):,} / {entry.get('documents'):,}")
        if split_tokens != info.get("tokens") or split_docs != info.get("documents"):
            report.problem(shards.MANIFEST, f"split {split!r} totals {info.get('tokens')} tokens / "
                                            f"{info.get('documents')} documents != the sum of its shards "
                                            f"({split_tokens} / {split_docs})")
    for key, value in totals.items():
        if manifest["totals"].get(key) != value:
            report.problem(shards.MANIFEST,
                           f"totals.{key} {manifest['totals'].get(key)} != the sum over shards {value}")
    for name in sorted(os.listdir(directory)):
        if name.endswith(".arrow") and os.path.normpath(os.path.join(directory, name)) not in listed:
            report.problem(name, "not listed in the manifest (a stale or foreign shard)")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="a token shard directory (webtext encode's --output)")


def main(args: argparse.Namespace) -> int:
    if "://" in args.directory:
        print(f"{args.directory}: verify reads local directories (copy the shards down first)", file=sys.stderr)
        return 2
    report = verify(args.directory)
    for line in report.problems:
        print(line, file=sys.stderr)
    if not report.ok:
        print(f"FAILED: {len(report.problems)} problem(s) in {args.directory}", file=sys.stderr)
        return 1
    print(f"OK: {report.shards} shards, {report.documents:,} documents, {report.tokens:,} tokens in {args.directory}")
    return 0
