"""Remove exact and near-duplicate documents (MinHash LSH with clustering computed in Beam) and keep one
document per cluster.

Exact duplicates share the hash of their normalised text (case, whitespace and punctuation folded). Among
the rest, near duplicates are found by MinHash over word n-gram shingles (shingles hashed in bulk with
numpy, then datasketch's permutations: see minhash.py) and LSH bands; candidate pairs are checked by Jaccard
similarity (--verify) and joined into clusters by connected components computed in Beam, so transitive
chains (A~B, B~C) end in one cluster. Each cluster keeps its highest-scored document (no score counts as
lowest; ties go to the smallest doc_id); the `clusters` table lists every member of every cluster with the
reason it was kept or removed.
"""

from __future__ import annotations

import argparse
import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq

from webtext.dedup import minhash
from webtext.dedup.config import VERIFY_CHOICES, DedupConfig
from webtext.dedup.pipeline import run_passes
from webtext.dedup.schema import CLUSTERS, DOCUMENTS, ERROR_REASONS, EXACT, INPUT_COLUMNS, NEAR, STAGE
from webtext.runtime import datasets, fs
from webtext.runtime.beam import add_runner_arguments, local_processes, pipeline_options
from webtext.runtime.errors import ERRORS
from webtext.runtime.stage import Plan, Result, StageError, require_dataset, run_command

EXAMPLE = """\
  webtext dedup --docs /tmp/documents --output /tmp/deduped --workers 1
  webtext dedup --docs /tmp/documents --output /tmp/deduped --threshold 0.7 --verify estimate
  webtext dedup --docs /tmp/documents --output /tmp/deduped --bands 16 --rows 8 --verify none
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DedupConfig()
    parser.add_argument("--docs", required=True, help="directory holding the extract stage's documents dataset")
    parser.add_argument("--output", required=True, help="output directory (documents, clusters, errors, _stats.json)")
    g = parser.add_argument_group("near duplicates")
    g.add_argument("--ngram", type=int, default=d.ngram, help=f"words per shingle (default: {d.ngram})")
    g.add_argument("--num-perm", type=int, default=d.num_perm, help=f"MinHash permutations (default: {d.num_perm})")
    g.add_argument("--seed", type=int, default=d.seed, help=f"MinHash seed (default: {d.seed})")
    g.add_argument("--scheme", choices=minhash.SCHEMES, default=d.scheme,
                   help="datasketch permutation scheme applied to the shingle hashes; legacy = datasketch < 2.0's "
                        f"(default: {d.scheme})")
    g.add_argument("--threshold", type=float, default=d.threshold,
                   help=f"Jaccard similarity of near duplicates (default: {d.threshold})")
    g.add_argument("--fn-weight", type=float, default=d.fn_weight,
                   help="weight of false negatives when --threshold picks bands x rows (datasketch's optimisation; "
                        f"false positives weigh 1 - this, and --verify removes them) (default: {d.fn_weight})")
    g.add_argument("--bands", type=int, help="LSH bands (with --rows; default: optimised for --threshold)")
    g.add_argument("--rows", type=int, help="LSH rows per band (with --bands)")
    g.add_argument("--verify", choices=VERIFY_CHOICES, default=d.verify,
                   help="check candidate pairs by exact Jaccard of their shingles, by MinHash's estimate, or not "
                        f"at all, before they join a cluster (default: {d.verify})")
    g.add_argument("--cc-rounds", type=int, default=d.cc_rounds,
                   help=f"connected-components rounds per pipeline pass (default: {d.cc_rounds})")
    g.add_argument("--lsh-partitions", type=int, default=d.lsh_partitions,
                   help=f"groups the LSH buckets are spread over (default: {d.lsh_partitions})")
    add_runner_arguments(parser)


@dataclasses.dataclass(frozen=True)
class Input:
    """What `check` found: the settings and the input's schema (the output keeps it exactly)."""
    cfg: DedupConfig
    schema: pa.Schema


def check(args: argparse.Namespace) -> Plan:
    cfg = DedupConfig.from_args(args)
    paths = require_dataset(args.docs, DOCUMENTS, "extract")
    with fs.open_read(paths[0]) as f:
        schema = pq.read_schema(f)
    missing = set(INPUT_COLUMNS) - set(schema.names)
    if missing:
        raise StageError(f"{args.docs}: documents lack the columns {sorted(missing)}")
    return Plan(output=args.output, clear=(DOCUMENTS, CLUSTERS, ERRORS),
                total=datasets.count_rows(args.docs, DOCUMENTS), unit="docs",
                title=f"dedup: {args.docs} -> {args.output}", data=Input(cfg, schema))


def run(args: argparse.Namespace, plan: Plan) -> Result:
    cfg = plan.data.cfg
    bands, rows = cfg.lsh()
    curve = minhash.s_curve(bands, rows, sorted(set(minhash.S_CURVE_POINTS) | {cfg.threshold}))
    counters, passes = run_passes(args.docs, args.output, cfg, plan.data.schema,
                                  lambda i: pipeline_options(args, f"{STAGE}-{i}" if i else STAGE),
                                  local_processes(args))
    drops = {"exact_duplicate": counters.get(EXACT, 0), "near_duplicate": counters.get(NEAR, 0),
             "duplicate_doc_id": counters.get("error_duplicate_doc_id", 0)}
    config = {**dataclasses.asdict(cfg), "bands": bands, "rows": rows, "docs": args.docs}
    note = (f"LSH {bands} bands x {rows} rows over {cfg.num_perm} permutations; probability of becoming a "
            f"candidate pair by Jaccard similarity: "
            + ", ".join(f"{s}: {p:.3f}" for s, p in curve.items())
            + f"; clustering took {passes} pass(es)")
    return Result(counters, config,
                  extra={"drops": drops, "s_curve": curve, "cc_passes": passes,
                         "documents_out": counters.get("kept", 0)},
                  notes=[note])


def funnel(stats: dict) -> list[tuple[str, int]]:
    counters, drops = stats["counters"], stats["drops"]
    documents_in = counters.get("documents_in", 0)
    return [
        ("documents read", documents_in + sum(counters.get(f"error_{r}", 0) for r in ERROR_REASONS[:2])),
        ("valid documents", documents_in),
        ("exact duplicates removed", drops["exact_duplicate"]),
        ("near duplicates removed", drops["near_duplicate"]),
        ("duplicate doc_id (errors)", drops["duplicate_doc_id"]),
        ("documents kept", counters.get("kept", 0)),
    ]


def main(args: argparse.Namespace) -> int:
    return run_command(STAGE, args, check, run, funnel)
