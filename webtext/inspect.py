"""Look inside any stage's output directory: token shards, a tokenizer, or the Parquet datasets of the
earlier stages (links, fetch log, documents, clusters, errors) and their _stats.json counters.

What DIR holds is detected: a manifest.json means token shards (a summary table, tokens-per-document
percentiles; --doc N decodes one document, --sample K shows random ones, --plot FILE.png draws the
document-length and token-frequency histograms); a tokenizer.json alone means a tokenizer; Parquet datasets
are summarised by name: row counts, top values of their categorical columns (hosts, reasons, languages...),
percentiles of their numeric columns, and --sample K rows.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys

import numpy as np

from webtext.runtime import datasets, fs, stats
from webtext.runtime.stage import error

EXAMPLE = """  webtext inspect out/shards
  webtext inspect out/shards --doc 0 --split val
  webtext inspect out/shards --sample 3 --plot shards.png
  webtext inspect out/dedup --sample 2"""

TOP_VALUES = 10                 # rows of each top-values table
SAMPLE_CHARS = 600              # characters of a sampled document's text shown
CELL_CHARS = 100                # characters of any other sampled cell shown
PERCENTILES = (0, 10, 50, 90, 99, 100)
PLOT_BINS = 50
# Columns whose top values tell most about each stage's dataset (others are found automatically).
TOP_COLUMNS = {
    "links": ["host", "subreddits"],
    "log": ["status", "error", "host", "content_type", "transient"],
    "documents": ["host", "language", "subreddits"],
    "clusters": ["reason", "kept"],
    "errors": ["stage", "reason"],
}
# String columns that are identifiers or free text: never tabulated, only shown in samples.
FREE_TEXT = re.compile(r"^(text|raw|detail|.*_detail|title|url|key|date|.*_at|ip|.*_id|.*_ids|.*digest.*|warc_.*"
                       r"|path|.*_url)$")
MAX_DISTINCT = 1000             # a string column with more distinct values than this is not categorical
DATASET_RE = re.compile(r"^(?P<name>[a-z_]+)-\d{5}-of-\d{5}\.parquet$")


def console():
    from rich.console import Console

    return Console(soft_wrap=False, width=max(100, os.get_terminal_size(1).columns if sys.stdout.isatty() else 120))


def _table(title: str, columns: list[str], rows: list[list], justify_right: tuple = ()):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c in justify_right else "left", overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.percentile(values, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, q)} | {"mean": float(np.mean(values))}


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 100 else f"{x:,.2f}"


# ---- token shards ---------------------------------------------------------------------------------------

def load_shards(directory: str):
    """(manifest, {split: [Shard...]}) of a local shard directory."""
    from webtext.encode import shards

    manifest = fs.read_json(os.path.join(directory, shards.MANIFEST))
    opened = {}
    for split, info in manifest["splits"].items():
        opened[split] = [shards.open_shard(shards.safe_member(directory, e["path"])) for e in info["shards"]]
    return manifest, opened


def doc_lengths(opened: dict) -> np.ndarray:
    parts = [np.diff(s.offsets.astype(np.int64)) for shard_list in opened.values() for s in shard_list]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def split_document(opened: dict, split: str, n: int):
    """The n-th document of a split in shard order: (doc_id, tokens)."""
    for s in opened.get(split, []):
        if n < s.num_documents:
            return s.table.column("doc_id")[n].as_py(), s.document(n)
        n -= s.num_documents
    raise IndexError


def summarize_shards(directory: str, out) -> tuple[dict, dict]:
    manifest, opened = load_shards(directory)
    tok = manifest["tokenizer"]
    rows = []
    for split, info in manifest["splits"].items():
        size = sum(e["bytes"] for e in info["shards"])
        rows.append([split, len(info["shards"]), f"{info['documents']:,}", f"{info['tokens']:,}", f"{size:,}"])
    t = manifest["totals"]
    rows.append(["total", sum(r[1] for r in rows), f"{t['documents']:,}", f"{t['tokens']:,}", f"{t['bytes']:,}"])
    out.print(_table(f"token shards: {directory}", ["split", "shards", "documents", "tokens", "bytes"], rows,
                     ("shards", "documents", "tokens", "bytes")))
    out.print(f"dtype {manifest['dtype']}, tokenizer {tok['fingerprint'][:16]} (vocab {tok['vocab_size']:,}, "
              f"eot {tok['eot_token']} = {tok['eot_id']}), format {manifest['format']} v{manifest['format_version']}")
    out.print("config: " + ", ".join(f"{k}={v}" for k, v in sorted(manifest.get("config", {}).items())))
    lengths = doc_lengths(opened)
    if len(lengths):
        p = percentiles(lengths)
        out.print(_table("tokens per document (end-of-text included)", list(p), [[_fmt(v) for v in p.values()]],
                         tuple(p)))
    return manifest, opened


def show_documents(directory: str, opened: dict, split: str, indices: list[int], out, full: bool) -> int:
    from webtext.encode import shards
    from webtext.tokenizer import bpe

    tok = bpe.load(os.path.join(directory, shards.TOKENIZER_FILE))
    total = sum(s.num_documents for s in opened.get(split, []))
    for n in indices:
        if not 0 <= n < total:
            error("inspect", f"--doc {n}: split {split!r} has {total:,} documents (0..{total - 1})")
            return 2
        doc_id, ids = split_document(opened, split, n)
        text = bpe.decode(tok, ids[:-1])  # the last id is the end-of-text marker
        if not full and len(text) > SAMPLE_CHARS:
            text = text[:SAMPLE_CHARS] + f"… [{len(text) - SAMPLE_CHARS:,} more characters]"
        out.rule(f"{split} document {n}: {doc_id} ({len(ids):,} tokens)")
        out.print(text, markup=False, highlight=False)
    return 0


def plot_shards(opened: dict, vocab_size: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = doc_lengths(opened)
    freq = np.zeros(vocab_size, dtype=np.int64)
    for shard_list in opened.values():
        for s in shard_list:
            if len(s.tokens):
                freq += np.bincount(s.tokens, minlength=vocab_size)[:vocab_size]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    if len(lengths):
        bins = np.logspace(0, np.log10(max(2, lengths.max())), PLOT_BINS)
        a.hist(lengths, bins=bins, color="tab:blue")
        a.set_xscale("log")
    a.set_title(f"document length ({len(lengths):,} documents)")
    a.set_xlabel("tokens per document")
    a.set_ylabel("documents")
    ranked = np.sort(freq[freq > 0])[::-1]
    if len(ranked):
        b.loglog(np.arange(1, len(ranked) + 1), ranked, color="tab:orange")
    b.set_title(f"token frequency ({int(freq.sum()):,} tokens, {len(ranked):,} of {vocab_size:,} ids used)")
    b.set_xlabel("token rank")
    b.set_ylabel("occurrences")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- Parquet datasets -----------------------------------------------------------------------------------

def dataset_names(directory: str) -> list[str]:
    names = set()
    for p in fs.glob_or_empty(fs.join(directory, "*.parquet")):
        m = DATASET_RE.match(p.rsplit("/", 1)[-1])
        if m:
            names.add(m["name"])
    order = list(TOP_COLUMNS)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _top_values(column) -> list[tuple[str, int]] | None:
    """Most common values of a string (or list of strings) column; None if it is not categorical."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            or pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)):
        return None
    counts = pc.value_counts(column)
    if len(counts) == 0:
        return []
    values, ns = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    pairs = sorted(zip(values, ns), key=lambda vn: (-vn[1], str(vn[0])))
    return [(str(v), n) for v, n in pairs[:TOP_VALUES]] if len(pairs) <= MAX_DISTINCT else None


def summarize_dataset(directory: str, name: str, out, sample: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = datasets.shard_paths(directory, name)
    with fs.open_read(paths[0]) as f:
        schema = pq.read_schema(f)
    rows = datasets.count_rows(directory, name)
    out.rule(f"{name}: {rows:,} rows in {len(paths)} file(s)")
    preferred = [c for c in TOP_COLUMNS.get(name, []) if c in schema.names]
    categorical = preferred + [f.name for f in schema if f.name not in preferred and not FREE_TEXT.match(f.name)
                               and (pa.types.is_string(f.type) or pa.types.is_boolean(f.type)
                                    or (pa.types.is_list(f.type) and pa.types.is_string(f.type.value_type)))]
    numeric = [f.name for f in schema if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
               and f.name not in categorical and not FREE_TEXT.match(f.name)]
    if rows == 0:
        return
    table = datasets.read_table(directory, name, columns=categorical + numeric)
    for c in categorical:
        top = _top_values(table.column(c))
        if top:
            out.print(_table(f"{name}.{c}: top values", [c, "rows", "share"],
                             [[v, f"{n:,}", f"{100 * n / rows:.1f}%"] for v, n in top], ("rows", "share")))
    prow = []
    for c in numeric:
        values = table.column(c).drop_null().to_numpy()
        if len(values):
            p = percentiles(values.astype(np.float64))
            prow.append([c] + [_fmt(p[k]) for k in list(p)])
    if prow:
        cols = [f"p{p}" for p in PERCENTILES] + ["mean"]
        out.print(_table(f"{name}: numeric columns", ["column"] + cols, prow, tuple(cols)))
    if sample:
        show_rows(directory, name, paths, rows, out, sample, seed)


def show_rows(directory: str, name: str, paths: list[str], rows: int, out, sample: int, seed: int) -> None:
    import pyarrow.parquet as pq

    picks = sorted(random.Random(seed).sample(range(rows), min(sample, rows)))
    start = 0
    for p in paths:
        with fs.open_read(p) as f:
            table = pq.read_table(f)
        for i in picks:
            if start <= i < start + table.num_rows:
                row = table.slice(i - start, 1).to_pylist()[0]
                out.rule(f"{name} row {i}", style="dim")
                for k, v in row.items():
                    limit = SAMPLE_CHARS if k == "text" else CELL_CHARS
                    s = str(v)
                    out.print(f"[bold]{k}[/]: ", end="")
                    out.print(s[:limit] + ("…" if len(s) > limit else ""), markup=False, highlight=False)
        start += table.num_rows


def summarize_stats(directory: str, out) -> None:
    s = stats.read_stats(directory)
    if not s:
        return
    counters = s.get("counters", {})
    out.print(f"_stats.json: stage {s.get('stage')}, started {s.get('started_at')}, {s.get('duration_s')} s")
    funnel = stage_funnel(s)
    if funnel:
        out.print(_table("funnel", ["step", "count"], [[k, f"{v:,}"] for k, v in funnel], ("count",)))
    if counters:
        out.print(_table("counters", ["counter", "count"], [[k, f"{v:,}"] for k, v in counters.items()],
                         ("count",)))


def stage_funnel(stats_json: dict) -> list[tuple[str, int]] | None:
    """The funnel the stage that wrote `stats_json` prints at its end (its command's `funnel`), if that stage
    is one of webtext.stages and its command can read these stats."""
    import importlib

    from webtext.stages import BY_NAME

    spec = BY_NAME.get(stats_json.get("stage"))
    if spec is None:
        return None
    funnel = getattr(importlib.import_module(spec.command), "funnel", None)
    try:
        return funnel(stats_json) if funnel else None
    except KeyError:  # stats of an older webtext, without a field its funnel reads
        return None


def summarize_tokenizer(directory: str, out) -> None:
    from webtext.tokenizer import bpe

    tok = bpe.load(directory)
    meta_path = fs.join(directory, bpe.META_FILE)
    meta = fs.read_json(meta_path) if fs.exists(meta_path) else {}
    out.print(f"tokenizer: {directory}: vocab {bpe.vocab_size(tok):,}, eot {bpe.EOT_TOKEN} = {bpe.eot_id(tok)}, "
              f"fingerprint {bpe.tokenizer_fingerprint(tok)[:16]}, {meta.get('source', 'unknown source')}")
    data = meta.get("data")
    if data:
        out.print(f"trained on {data['documents']:,} documents, {data['bytes']:,} bytes "
                  f"(data fingerprint {data['fingerprint'][:16]})")
    vocab = tok.get_vocab()
    longest = sorted(vocab, key=lambda t: (-len(t), vocab[t]))[:TOP_VALUES]
    out.print("longest tokens: " + ", ".join(repr(bpe.decode(tok, [vocab[t]])) for t in longest), markup=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="any stage's output directory")
    parser.add_argument("--doc", type=int, action="append", metavar="N",
                        help="decode document N of --split (repeatable)")
    parser.add_argument("--split", default="train", help="split for --doc / --sample on shards (default: train)")
    parser.add_argument("--sample", type=int, default=0, metavar="K", help="show K random documents or rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default: 0)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="shards: save document-length and token-frequency histograms")
    parser.add_argument("--full", action="store_true",
                        help=f"show whole documents (default: first {SAMPLE_CHARS} chars)")


def main(args: argparse.Namespace) -> int:
    try:
        return _inspect(args)
    except BrokenPipeError:  # the reader left (`webtext inspect DIR | head`): the rest goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _inspect(args: argparse.Namespace) -> int:
    from webtext.encode import shards
    from webtext.tokenizer import bpe

    directory = args.directory.rstrip("/") or "/"
    out = console()
    has_manifest = fs.exists(fs.join(directory, shards.MANIFEST))
    names = dataset_names(directory)
    if not has_manifest and not names and not fs.exists(fs.join(directory, bpe.TOKENIZER_FILE)):
        error("inspect", f"{directory}: no token shards (manifest.json), tokenizer.json or Parquet datasets here")
        return 2
    if has_manifest:
        if fs.is_remote(directory):
            error("inspect", f"{directory}: inspect opens shards locally (copy them down first)")
            return 2
        try:
            manifest, opened = summarize_shards(directory, out)
        except (OSError, ValueError, KeyError) as e:
            error("inspect", f"{directory}: cannot read the shards ({e}); run `webtext verify {directory}`")
            return 1
        if args.split not in opened:
            error("inspect", f"--split {args.split!r}: the splits are {', '.join(opened)}")
            return 2
        if args.doc:
            rc = show_documents(directory, opened, args.split, args.doc, out, args.full)
            if rc:
                return rc
        if args.sample:
            total = sum(s.num_documents for s in opened[args.split])
            picks = sorted(random.Random(args.seed).sample(range(total), min(args.sample, total)))
            show_documents(directory, opened, args.split, picks, out, args.full)
        if args.plot:
            plot_shards(opened, manifest["tokenizer"]["vocab_size"], args.plot)
            out.print(f"plot -> {args.plot}")
    elif fs.exists(fs.join(directory, bpe.TOKENIZER_FILE)):
        summarize_tokenizer(directory, out)
    for name in names:
        try:
            summarize_dataset(directory, name, out, args.sample if not has_manifest else 0, args.seed)
        except (OSError, ValueError) as e:
            error("inspect", f"{directory}: dataset {name!r}: {e}")
    summarize_stats(directory, out)
    return 0
