"""Remove exact and near-duplicate documents (MinHash LSH with clustering computed in Beam) and keep one
document per cluster.

Exact duplicates share the hash of their normalised text (case, whitespace and punctuation folded). Among
the rest, near duplicates are found by MinHash over word n-gram shingles (shingles hashed in bulk with
numpy, then datasketch's permutations: see minhash.py) and LSH bands; candidate pairs are checked by Jaccard similarity (--verify) and joined into
clusters by connected components computed in Beam, so transitive chains (A~B, B~C) end in one cluster. Each
cluster keeps its highest-scored document (no score counts as lowest; ties go to the smallest doc_id); the
`clusters` table lists every member of every cluster with the reason it was kept or removed.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import itertools
import sys
import typing
import zlib
from typing import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from webtext.dedup import components, minhash
from webtext.runtime import datasets, fs, pool
from webtext.runtime.beam import (PoolMap, ReadDataset, UnpackResults, WriteDataset, WriteRuns,
                                    add_runner_arguments, local_processes, pipeline_options)
from webtext.dedup.rows import STAGE, keep_row_group, payload_row_group, sketch_row_group, warm_up
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_sort_key
from webtext.runtime.stats import BeamCounters, Count, Timer, collect_counters, print_funnel, write_stats

DOCUMENTS = "documents"
CLUSTERS = "clusters"
WORK_DIR = "_work"                 # edge sets of extra clustering passes; removed when the stage finishes
DOCUMENT_ROWS_PER_SHARD = 25_000   # ~100 MB files; a shard's merge holds ~150 MB, and a 50k-document input gives two that merge in parallel
CLUSTER_ROWS_PER_SHARD = 1_000_000
LSH_BATCH = 1024                   # documents per band-partitioning batch
LSH_PARTITIONS = 256               # buckets are spread over this many groups (the LSH work per task)
VERIFY_ALL_PAIRS_UPTO = 32         # when verifying, buckets up to this size give all pairs, larger ones a star
VERIFY_CHOICES = ("exact", "estimate", "none")
VERIFY = "exact"                   # candidate pairs below the threshold never join a cluster

KEPT, EXACT, NEAR = "kept", "exact_duplicate", "near_duplicate"
REASONS = (KEPT, EXACT, NEAR)
ERROR_REASONS = ("missing_doc_id", "missing_text", "duplicate_doc_id")

CLUSTERS_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=False),   # the smallest doc_id in the cluster
    pa.field("cluster_size", pa.int64(), nullable=False),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),       # kept / exact_duplicate / near_duplicate
])

EXAMPLE = """\
  webtext dedup --docs /tmp/documents --output /tmp/deduped --workers 1
  webtext dedup --docs /tmp/documents --output /tmp/deduped --threshold 0.7 --verify estimate
  webtext dedup --docs /tmp/documents --output /tmp/deduped --bands 16 --rows 8 --verify none
"""


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    ngram: int = minhash.NGRAM
    num_perm: int = minhash.NUM_PERM
    seed: int = minhash.SEED
    scheme: str = minhash.SCHEME
    threshold: float = minhash.THRESHOLD
    fn_weight: float = minhash.FN_WEIGHT
    bands: int | None = None        # with rows: the LSH setting as given; else optimised for the threshold
    rows: int | None = None
    verify: str = VERIFY
    cc_rounds: int = components.ROUNDS
    lsh_partitions: int = LSH_PARTITIONS

    def __post_init__(self):
        if self.ngram < 1 or self.num_perm < 1 or self.lsh_partitions < 1:
            raise ValueError("ngram, num_perm and lsh_partitions must be positive")
        if self.verify not in VERIFY_CHOICES:
            raise ValueError(f"verify must be one of {VERIFY_CHOICES}, got {self.verify!r}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give --bands and --rows together, or neither (then --threshold decides them)")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ValueError(f"bands x rows must be at most num_perm ({self.num_perm}), got "
                             f"{self.bands} x {self.rows}")

    def lsh(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return minhash.lsh_params(self.threshold, self.num_perm, self.fn_weight)


# ---------------------------------------------------------------------------------------------------------
# Plain functions

def keep_order(member: tuple) -> tuple:
    """Sort key of cluster members (doc_id, score, exact_key): the first is kept. Highest score first, no
    score last, then the smallest doc_id."""
    doc_id, score, _ = member
    return (score is None, -(score or 0), doc_id)


def cluster_rows(cluster_id: str, members: Iterable[tuple]) -> list[dict]:
    """The clusters-table rows of one cluster from its members (doc_id, score, exact_key)."""
    members = sorted(set(members), key=keep_order)
    kept_key = members[0][2]
    rows = []
    for i, (doc_id, _, key) in enumerate(members):
        reason = KEPT if i == 0 else (EXACT if key == kept_key else NEAR)
        rows.append({"doc_id": doc_id, "cluster_id": cluster_id, "cluster_size": len(members),
                     "kept": i == 0, "reason": reason})
    return rows


def bucket_edges(keys: np.ndarray, ids: list[str], all_pairs_upto: int = 0) -> set[tuple[str, str]]:
    """Edges between documents that share a bucket. A bucket of up to `all_pairs_upto` members gives every
    pair (so that verification can keep the pairs that really are similar); a larger one gives a star,
    each member linked to its smallest doc_id (the bucket stays connected with one edge per member)."""
    if len(keys) < 2:
        return set()
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(ordered)]))
    shared = ends - starts > 1
    edges = set()
    for s, e in zip(starts[shared].tolist(), ends[shared].tolist()):
        members = sorted({ids[i] for i in order[s:e].tolist()})
        if len(members) <= all_pairs_upto:
            edges.update((b, a) for i, a in enumerate(members) for b in members[i + 1:])
        else:
            edges.update((m, members[0]) for m in members[1:])
    return edges


def similarity(payload_a: bytes, payload_b: bytes, verify: str, dtype) -> float:
    """Jaccard similarity of two documents from their verification payloads: distinct sorted shingle hashes
    (exact) or MinHash signatures (estimate)."""
    if verify == "exact":
        return minhash.jaccard_of_hashes(np.frombuffer(payload_a, np.uint32), np.frombuffer(payload_b, np.uint32),
                                         distinct=True)
    return minhash.estimated_jaccard(np.frombuffer(payload_a, dtype), np.frombuffer(payload_b, dtype))


@functools.cache  # asked for by the sketching, the verification and `prepare`: its permutations made once
def _hasher(cfg: DedupConfig) -> minhash.MinHasher:
    return minhash.MinHasher(cfg.num_perm, cfg.seed, cfg.scheme)


# ---------------------------------------------------------------------------------------------------------
# Reading and the local processes

def _shard_paths(docs_dir: str) -> list[str]:
    paths = datasets.shard_paths(docs_dir, DOCUMENTS)
    if not paths:
        raise FileNotFoundError(f"{docs_dir}: no dataset {DOCUMENTS!r} "
                                f"({datasets.shard_pattern(docs_dir, DOCUMENTS)})")
    return paths


class RowGroups(beam.PTransform):
    """The reading tasks of a documents dataset, one per Parquet row group (a few thousand documents),
    spread over workers. The files are listed when the pipeline runs, not when it is built: a graph can be
    built (and checked, `webtext build --dry-run`) before the extract stage has written anything."""

    def __init__(self, docs_dir: str):
        super().__init__()
        self.docs_dir = docs_dir

    def expand(self, pbegin):
        return (pbegin
                | "Dir" >> beam.Create([self.docs_dir])
                | "Paths" >> beam.FlatMap(_shard_paths)
                | "RowGroups" >> beam.FlatMap(datasets.row_groups)
                | "Spread" >> beam.Reshuffle())


def input_schema(docs_dir: str) -> pa.Schema:
    """The documents schema as the input files declare it: the output keeps it exactly."""
    paths = datasets.shard_paths(docs_dir, DOCUMENTS)
    if not paths:
        raise FileNotFoundError(f"{docs_dir}: no dataset {DOCUMENTS!r}")
    with fs.open_read(paths[0]) as f:
        return pq.read_schema(f)


META, EXACT_EDGES = "meta", "exact_edges"
EXACT_PARTITIONS = 64   # exact keys are grouped in this many parts (columnar: the work is per part)
META_PARTITIONS = 64    # documents' (score, exact key) are joined with their clusters in this many parts


def doc_partition(doc_id: str, partitions: int) -> int:
    """The part of a doc_id: the same in every process (crc32, not the salted `hash`)."""
    return zlib.crc32(doc_id.encode("utf-8")) % partitions


def _split_batch(columns, part_of, partitions: int):
    """A columnar batch -> (part, sub-batch) for each part it has rows in, rows in their order."""
    rows_of = collections.defaultdict(list)
    for i, part in enumerate(part_of(columns, partitions)):
        rows_of[part].append(i)
    for part in sorted(rows_of):
        yield part, tuple([column[i] for i in rows_of[part]] for column in columns)


def _exact_parts(columns, partitions):
    return [int(key[:8], 16) % partitions for key in columns[2]]


def _meta_parts(columns, partitions):
    return [doc_partition(doc_id, partitions) for doc_id in columns[0]]


class _ExactPartitions(beam.DoFn):
    def process(self, batch):
        yield from _split_batch(batch, _exact_parts, EXACT_PARTITIONS)


class _MetaPartitions(beam.DoFn):
    """Sketch batches -> (part, [(doc_id, score, exact_key), ...]): what the clusters need of every document."""

    def process(self, batch):
        for part, (ids, scores, keys, _) in _split_batch(batch, _meta_parts, META_PARTITIONS):
            yield part, list(zip(ids, scores, keys))


@beam.typehints.with_output_types(typing.Any)  # main and tagged outputs mixed
class _ExactGroups(beam.DoFn):
    """One part of the exact keys: documents with one exact key are represented in LSH by the smallest
    doc_id, and the others are linked to it by an edge (tagged EXACT_EDGES). The representatives go out in
    lists of (doc_id, band keys) for LSH."""

    def __init__(self, count: Count):
        self.count = count

    def process(self, element):
        _, chunks = element
        # (a doc_id given twice with one text has the same band keys twice: which comes first is moot)
        members = sorted(((key, doc_id, bands) for ids, _, keys, band_keys in chunks
                          for doc_id, key, bands in zip(ids, keys, band_keys)), key=lambda m: m[:2])
        reps = []
        for _, group in itertools.groupby(members, key=lambda m: m[0]):
            group = list(group)
            rep, rep_bands = group[0][1], group[0][2]
            ids = list(dict.fromkeys(m[1] for m in group))  # sorted already; a repeated doc_id once
            for doc_id in ids[1:]:
                yield beam.pvalue.TaggedOutput(EXACT_EDGES, (doc_id, rep))
            if len(ids) > 1:
                self.count("exact_groups")
            if rep_bands is not None:
                reps.append((rep, rep_bands))
        for start in range(0, len(reps), LSH_BATCH):
            yield reps[start:start + LSH_BATCH]


class _BandPartitions(beam.DoFn):
    """A batch of (doc_id, band keys) -> one element per partition of the bucket space, holding that
    partition's (bucket key, doc_id) pairs as arrays: few, large elements instead of one per band."""

    def __init__(self, bands: int, partitions: int):
        self.bands, self.partitions = bands, partitions

    def process(self, batch):
        ids = [doc_id for doc_id, _ in batch]
        keys = np.frombuffer(b"".join(b for _, b in batch), np.uint64).reshape(len(batch), self.bands).ravel()
        owner = np.repeat(np.arange(len(batch)), self.bands)
        part = keys % np.uint64(self.partitions)
        order = np.argsort(part, kind="stable")
        part, keys, owner = part[order], keys[order], owner[order]
        bounds = np.flatnonzero(part[1:] != part[:-1]) + 1
        for s, e in zip(np.concatenate(([0], bounds)).tolist(), np.concatenate((bounds, [len(part)])).tolist()):
            yield int(part[s]), (keys[s:e].tobytes(), [ids[i] for i in owner[s:e].tolist()])


class _BucketEdges(beam.DoFn):
    def __init__(self, all_pairs_upto: int, count: Count):
        self.all_pairs_upto, self.count = all_pairs_upto, count

    def process(self, element):
        _, chunks = element
        keys, ids = [], []
        for key_bytes, chunk_ids in chunks:
            keys.append(np.frombuffer(key_bytes, np.uint64))
            ids.extend(chunk_ids)
        edges = bucket_edges(np.concatenate(keys), ids, self.all_pairs_upto)
        self.count("lsh_candidate_edges", len(edges))
        yield from sorted(edges)


class LshCandidates(beam.PTransform):
    """Lists of (doc_id, band keys) -> candidate edges (child, parent): documents sharing a bucket in some
    band."""

    def __init__(self, bands: int, partitions: int, all_pairs_upto: int, count: Count):
        super().__init__()
        self.bands, self.partitions, self.all_pairs_upto, self.count = bands, partitions, all_pairs_upto, count

    def expand(self, sketches):
        return (sketches
                | "Partition" >> beam.ParDo(_BandPartitions(self.bands, self.partitions))
                | "GroupPartitions" >> beam.GroupByKey()
                | "Buckets" >> beam.ParDo(_BucketEdges(self.all_pairs_upto, self.count)))


def _pair_payloads(element):
    doc_id, grouped = element
    payloads = list(grouped["payload"])
    if not payloads:
        return
    for parent in grouped["as_child"]:
        yield (doc_id, parent), (0, payloads[0])
    for child in grouped["as_parent"]:
        yield (child, doc_id), (1, payloads[0])


class _Verify(beam.DoFn):
    def __init__(self, verify: str, threshold: float, dtype, count: Count):
        self.verify, self.threshold, self.dtype, self.count = verify, threshold, dtype, count

    def process(self, element):
        pair, sides = element
        sides = dict(sides)
        if len(sides) < 2:
            return
        if similarity(sides[0], sides[1], self.verify, self.dtype) >= self.threshold:
            self.count("verified_edges")
            yield pair
        else:
            self.count("rejected_edges")


class VerifyCandidates(beam.PTransform):
    """Candidate edges whose Jaccard similarity (exact, or MinHash's estimate) reaches the threshold. Only
    the candidates' payloads are computed (from the documents in `docs_dir`, read once more): each is
    shuffled once, then once more per candidate edge it is part of."""

    def __init__(self, p, docs_dir: str, cfg: DedupConfig, processes: int, count: Count):
        super().__init__()
        self.p, self.docs_dir, self.cfg, self.processes, self.count = p, docs_dir, cfg, processes, count

    def expand(self, edges):
        cfg, hasher = self.cfg, _hasher(self.cfg)
        edges = edges | "Distinct" >> beam.Distinct()
        wanted = edges | "Ends" >> beam.FlatMap(lambda e: e) | "DistinctEnds" >> beam.Distinct()
        # Its own read: a second consumer of the sketching read would be fused with it, and this one waits
        # for a side input computed downstream of that read.
        payloads = (self.p
                    | "InputForPayloads" >> RowGroups(self.docs_dir)
                    | "Payloads" >> PoolMap(payload_row_group, self.processes, cfg.ngram, cfg.verify, hasher,
                                            side=(beam.pvalue.AsList(wanted),), prepare=frozenset)
                    | "Each" >> beam.FlatMap(lambda items: items))
        return ({"payload": payloads,
                 "as_child": edges | "ByChild" >> beam.MapTuple(lambda c, p: (c, p)),
                 "as_parent": edges | "ByParent" >> beam.MapTuple(lambda c, p: (p, c))}
                | "JoinPayloads" >> beam.CoGroupByKey()
                | "PairPayloads" >> beam.FlatMap(_pair_payloads)
                | "ByPair" >> beam.GroupByKey()
                | "Verify" >> beam.ParDo(_Verify(cfg.verify, cfg.threshold, hasher.dtype, self.count)))


# ---------------------------------------------------------------------------------------------------------
# Clusters and the documents kept

def _membership(star):
    """A settled star edge -> (part, (doc_id, root)) for the child and for the root."""
    child, parent = star
    return [(doc_partition(child, META_PARTITIONS), (child, parent)),
            (doc_partition(parent, META_PARTITIONS), (parent, parent))]


@beam.typehints.with_output_types(typing.Any)  # main and tagged outputs mixed
class _Members(beam.DoFn):
    """One part of the doc_ids, {meta, root} -> (root, (doc_id, score, exact_key)) for documents in a
    cluster; a doc_id that came in more than once is an input error (tagged "duplicate") and joins no
    cluster."""

    def __init__(self, count: Count):
        self.count = count

    def process(self, element):
        _, grouped = element
        metas = collections.defaultdict(list)
        for chunk in grouped[META]:
            for doc_id, score, key in chunk:
                metas[doc_id].append((score, key))
        roots = collections.defaultdict(set)
        for doc_id, root in grouped["root"]:
            roots[doc_id].add(root)
        for doc_id in sorted(metas):
            entries = metas[doc_id]
            if len(entries) > 1:
                self.count("error_duplicate_doc_id", len(entries))
                yield beam.pvalue.TaggedOutput("duplicate", (doc_id, len(entries)))
            elif doc_id in roots:
                # More than one root only before the components settle; that pass's output is then replaced.
                score, key = entries[0]
                yield min(roots[doc_id]), (doc_id, score, key)


class _Clusters(beam.DoFn):
    def __init__(self, count: Count):
        self.count = count

    def process(self, element):
        root, members = element
        rows = cluster_rows(root, members)
        self.count("clusters")
        for r in rows:
            self.count(r["reason"] if r["reason"] != KEPT else "kept_from_clusters")
            yield r


class ResolveClusters(beam.PTransform):
    """Settled star edges + the meta parts (`_MetaPartitions`) -> clusters-table rows, the doc_ids that are removed (with
    their reason), and the number of input rows they are."""

    def __init__(self, meta, count: Count):
        super().__init__()
        self.meta, self.count = meta, count

    def expand(self, stars):
        members = ({META: self.meta, "root": stars | "Membership" >> beam.FlatMap(_membership)}
                   | "JoinMeta" >> beam.CoGroupByKey()
                   | "Members" >> beam.ParDo(_Members(self.count)).with_outputs("duplicate", main="members"))
        rows = (members.members
                | "ByCluster" >> beam.GroupByKey()
                | "Choose" >> beam.ParDo(_Clusters(self.count)))
        removed = (rows
                   | "Removed" >> beam.Filter(lambda r: not r["kept"])
                   | "RemovedIds" >> beam.Map(lambda r: (r["doc_id"], r["reason"])))
        duplicates = members.duplicate | "DuplicateIds" >> beam.MapTuple(lambda d, _: (d, "duplicate_doc_id"))
        removed_rows = ((removed | "OneRowEach" >> beam.Map(lambda _: 1),
                         members.duplicate | "RowsEach" >> beam.MapTuple(lambda _, n: n))
                        | "AllRemoved" >> beam.Flatten()
                        | "RemovedRows" >> beam.CombineGlobally(sum))
        return rows, (removed, duplicates) | "Drop" >> beam.Flatten(), removed_rows


# ---------------------------------------------------------------------------------------------------------
# The stage

def _documents_and_meta(p, docs_dir: str, cfg: DedupConfig, count: Count, signatures: bool, processes: int):
    """(errors, sketch batches, meta parts, valid row count) of the input documents."""
    sketched = (p
                | "InputForSketch" >> RowGroups(docs_dir)
                | "Sketch" >> PoolMap(sketch_row_group, processes, cfg.ngram, _hasher(cfg), cfg.lsh(),
                                      signatures)
                | "UnpackSketches" >> beam.ParDo(UnpackResults(count)).with_outputs(ERRORS, main="sketches"))
    meta = sketched.sketches | "MetaParts" >> beam.ParDo(_MetaPartitions())
    valid_rows = (sketched.sketches
                  | "BatchRows" >> beam.Map(lambda batch: len(batch[0]))
                  | "ValidRows" >> beam.CombineGlobally(sum))
    return sketched[ERRORS], sketched.sketches, meta, valid_rows


def _write_outputs(p, docs_dir: str, output_dir: str, schema: pa.Schema, stars, meta, valid_rows, errors,
                   count: Count, processes: int):
    clusters, dropped, removed_rows = stars | "Resolve" >> ResolveClusters(meta, count)
    num_shards = (
        (valid_rows, removed_rows | "Negative" >> beam.Map(lambda n: -n))
        | "Rows" >> beam.Flatten()
        | "KeptRows" >> beam.CombineGlobally(sum)
        | "NumShards" >> beam.Map(datasets.num_shards_for, DOCUMENT_ROWS_PER_SHARD))
    kept = (p
            | "InputForOutput" >> RowGroups(docs_dir)
            | "Keep" >> PoolMap(keep_row_group, processes, schema, fs.join(output_dir, WORK_DIR, "kept"),
                                side=(beam.pvalue.AsDict(dropped), beam.pvalue.AsSingleton(num_shards)))
            | "UnpackKept" >> beam.ParDo(UnpackResults(count)).with_outputs(ERRORS, main="runs"))
    _ = kept.runs | "WriteDocuments" >> WriteRuns(
        output_dir, DOCUMENTS, schema, "doc_id", num_shards, processes)
    _ = clusters | "WriteClusters" >> WriteDataset(
        output_dir, CLUSTERS, CLUSTERS_SCHEMA, lambda r: r["doc_id"], CLUSTER_ROWS_PER_SHARD)
    _ = ((errors, kept[ERRORS]) | "AllErrors" >> beam.Flatten()
         | "WriteErrors" >> WriteDataset(output_dir, ERRORS, ERRORS_SCHEMA, error_sort_key))


def build_pipeline(p: beam.Pipeline, docs_dir: str, output_dir: str, cfg: DedupConfig, schema: pa.Schema,
                   count: Count, processes: int = 1) -> None:
    """The stage's first (usually only) pass: sketches, exact groups, LSH candidates, verification,
    connected components, and the outputs; its settled-or-not star edges are saved under WORK_DIR for
    further passes. Builds without touching the input or the output. `processes`: local processes for the
    work on the documents' text (sketches, verification payloads, the kept documents)."""
    errors, sketches, meta, valid_rows = _documents_and_meta(p, docs_dir, cfg, count, True, processes)
    groups = (sketches
              | "ExactParts" >> beam.ParDo(_ExactPartitions())
              | "ByExactPart" >> beam.GroupByKey()
              | "ExactGroups" >> beam.ParDo(_ExactGroups(count)).with_outputs(EXACT_EDGES, main="reps"))
    bands, rows = cfg.lsh()
    all_pairs_upto = VERIFY_ALL_PAIRS_UPTO if cfg.verify != "none" else 0
    candidates = groups.reps | "LSH" >> LshCandidates(bands, cfg.lsh_partitions, all_pairs_upto, count)
    if cfg.verify != "none":
        candidates = candidates | "Verify" >> VerifyCandidates(p, docs_dir, cfg, processes, count)
    stars = ((groups[EXACT_EDGES], candidates)
             | "AllEdges" >> beam.Flatten()
             | "Components" >> components.ConnectedComponents(STAGE, cfg.cc_rounds))
    _ = stars | "SaveEdges" >> components.WriteEdges(fs.join(output_dir, WORK_DIR, "pass0"))
    _write_outputs(p, docs_dir, output_dir, schema, stars, meta, valid_rows, errors, count, processes)


def graph(p: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's (first-pass) pipeline, built from its flags without touching any output or needing the
    input yet (`webtext build --dry-run`). The output keeps the input's schema; the graph is built with the
    extract stage's documents schema, which is what the input is when the stages run in sequence."""
    from webtext.extract.pipeline import DOCUMENTS_SCHEMA

    build_pipeline(p, args.docs, args.output, config_from_args(args), DOCUMENTS_SCHEMA, BeamCounters(STAGE),
                   local_processes(args))


def run_dedup(docs_dir: str, output_dir: str, cfg: DedupConfig, options_for_pass, quiet: bool = False,
              processes: int = 1) -> dict:
    """Run the stage; `options_for_pass(i)` gives the PipelineOptions of each pipeline it runs (pass 0 is
    the main one); `processes` local processes work on the documents' text. Returns the stats written to
    `_stats.json`."""
    timer = Timer()
    tasks = sum(len(datasets.row_groups(path)) for path in datasets.shard_paths(docs_dir, DOCUMENTS))
    if tasks > 1:  # a single row group runs inline: no process to start
        pool.prestart(min(processes, tasks), warm_up)
    schema = input_schema(docs_dir)
    missing = {"doc_id", "url", "text", "score"} - set(schema.names)
    if missing:
        raise ValueError(f"{docs_dir}: documents lack the columns {sorted(missing)}")
    bands, rows = cfg.lsh()
    curve = minhash.s_curve(bands, rows, sorted(set(minhash.S_CURVE_POINTS) | {cfg.threshold}))
    work = fs.join(output_dir, WORK_DIR)
    fs.makedirs(output_dir)
    for name in (DOCUMENTS, CLUSTERS, ERRORS):
        datasets.remove_dataset(output_dir, name)
    count = BeamCounters(STAGE)

    with beam.Pipeline(options=options_for_pass(0)) as p:
        build_pipeline(p, docs_dir, output_dir, cfg, schema, count, processes)
    counters = collect_counters(p.result, STAGE)
    passes = 1
    if counters.get(components.UNSETTLED, 0):
        # Clusters too deep for one pass: settle the saved edges, then choose again from the settled ones.
        extra, final_dir = components.settle(work, options_for_pass, STAGE, cfg.cc_rounds)
        passes += extra
        for name in (DOCUMENTS, CLUSTERS, ERRORS):
            datasets.remove_dataset(output_dir, name)
        with beam.Pipeline(options=options_for_pass(passes)) as p:
            errors, _, meta, valid_rows = _documents_and_meta(p, docs_dir, cfg, count, False, processes)
            stars = (p | "ReadEdges" >> ReadDataset(final_dir, components.EDGES)
                     | "AsEdges" >> beam.Map(lambda r: (r["child"], r["parent"])))
            _write_outputs(p, docs_dir, output_dir, schema, stars, meta, valid_rows, errors, count,
                           processes)
        resolved = collect_counters(p.result, STAGE)
        counters = {**counters, **{k: v for k, v in resolved.items() if k != components.UNSETTLED}}
        counters[components.UNSETTLED] = 0
        counters = dict(sorted(counters.items()))
    fs.delete(fs.glob_or_empty(fs.join(work, "*", "*", "*")))  # runs left by a killed earlier run (gs://)
    fs.delete(fs.glob_or_empty(fs.join(work, "*", "*")))
    fs.delete(fs.glob_or_empty(fs.join(work, "*")))
    fs.delete(fs.glob_or_empty(work))

    documents_in = counters.get("documents_in", 0)
    drops = {"exact_duplicate": counters.get(EXACT, 0), "near_duplicate": counters.get(NEAR, 0),
             "duplicate_doc_id": counters.get("error_duplicate_doc_id", 0)}
    config = {**dataclasses.asdict(cfg), "bands": bands, "rows": rows, "docs": docs_dir}
    stats = write_stats(output_dir, STAGE, config, counters, timer, drops=drops, s_curve=curve,
                        cc_passes=passes, documents_out=counters.get("kept", 0))
    if not quiet:
        print_funnel(f"dedup: {docs_dir} -> {output_dir}", [
            ("documents read", documents_in + sum(counters.get(f"error_{r}", 0) for r in ERROR_REASONS[:2])),
            ("valid documents", documents_in),
            ("exact duplicates removed", drops["exact_duplicate"]),
            ("near duplicates removed", drops["near_duplicate"]),
            ("duplicate doc_id (errors)", drops["duplicate_doc_id"]),
            ("documents kept", counters.get("kept", 0)),
        ])
        print(f"LSH {bands} bands x {rows} rows over {cfg.num_perm} permutations; probability of becoming a "
              f"candidate pair by Jaccard similarity: "
              + ", ".join(f"{s}: {p:.3f}" for s, p in curve.items())
              + f"; clustering took {passes} pass(es)", file=sys.stderr)
    return stats


# ---------------------------------------------------------------------------------------------------------
# CLI

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


def config_from_args(args: argparse.Namespace) -> DedupConfig:
    return DedupConfig(ngram=args.ngram, num_perm=args.num_perm, seed=args.seed, scheme=args.scheme,
                       threshold=args.threshold, fn_weight=args.fn_weight, bands=args.bands, rows=args.rows,
                       verify=args.verify, cc_rounds=args.cc_rounds, lsh_partitions=args.lsh_partitions)


def prepare(args: argparse.Namespace) -> None:
    """What a run with these flags needs before its input (`webtext build` calls it while extract runs):
    datasketch imported (~0.3 s, with scipy) and the LSH setting worked out (kept by `minhash.lsh_params`)."""
    cfg = config_from_args(args)
    cfg.lsh()
    _hasher(cfg)


def main(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"webtext dedup: {e}", file=sys.stderr)
        return 2
    try:
        run_dedup(args.docs, args.output, cfg,
                  lambda i: pipeline_options(args, f"{STAGE}-{i}" if i else STAGE),
                  processes=local_processes(args))
    except (FileNotFoundError, ValueError) as e:  # no input dataset, or one without the needed columns
        print(f"webtext dedup: {e}", file=sys.stderr)
        return 2
    return 0
