"""The dedup stage's Beam graph: sketches of the input documents (in local processes, `task.py`), exact
groups, LSH candidates, their verification, connected components, and the outputs; `run_passes` runs it,
and further clustering passes when the components need them. `graph` builds it for `webtext build
--dry-run`.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import typing
import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa

from webtext.dedup import components
from webtext.dedup.clusters import bucket_edges, cluster_rows, similarity
from webtext.dedup.config import DedupConfig
from webtext.dedup.schema import CLUSTERS, CLUSTERS_SCHEMA, DOCUMENTS, EDGES, EDGES_SCHEMA, KEPT, STAGE, WORK_DIR
from webtext.dedup.task import keep_row_group, payload_row_group, sketch_row_group
from webtext.runtime import datasets, fs
from webtext.runtime.beam import (
    PoolMap,
    ReadDataset,
    UnpackResults,
    WriteDataset,
    WriteRuns,
    existing_shards,
    local_processes,
)
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_sort_key
from webtext.runtime.stats import BeamCounters, Count, collect_counters

DOCUMENT_ROWS_PER_SHARD = 25_000   # a shard's merge holds it whole; 50k documents give two shards, merged in parallel
CLUSTER_ROWS_PER_SHARD = 1_000_000
EDGES_ROWS_PER_SHARD = 2_000_000
LSH_BATCH = 1024                   # documents per band-partitioning batch
VERIFY_ALL_PAIRS_UPTO = 32         # when verifying, buckets up to this size give all pairs, larger ones a star

# ---------------------------------------------------------------------------------------------------------
# Reading the input

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
                | "Paths" >> beam.FlatMap(existing_shards, DOCUMENTS)
                | "RowGroups" >> beam.FlatMap(datasets.row_groups)
                | "Spread" >> beam.Reshuffle())


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
        cfg, hasher = self.cfg, self.cfg.hasher()
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
# Connected components (the node operations: components.py)

def _both_ways(e):
    return [(e[0], e[1]), (e[1], e[0])]


class LargeStar(beam.PTransform):
    def expand(self, edges):
        return (edges
                | "BothWays" >> beam.FlatMap(_both_ways)
                | "ByNode" >> beam.GroupByKey()
                | "Link" >> beam.FlatMapTuple(components.large_star))


class SmallStar(beam.PTransform):
    def expand(self, edges):
        return (edges
                | "ByChild" >> beam.GroupByKey()
                | "Link" >> beam.FlatMapTuple(components.small_star))


class _Settle(beam.DoFn):
    """The final check: passes every edge on once (from its child's side) and counts unsettled nodes."""

    def __init__(self, count: Count):
        self.count = count

    def process(self, element):
        node, neighbours = element
        neighbours = set(neighbours)
        if components.unsettled(node, neighbours):
            self.count(components.UNSETTLED)
        for v in sorted(neighbours):
            if v < node:
                yield (node, v)


class ConnectedComponents(beam.PTransform):
    """Edges in, edges out: `rounds` large-star/small-star rounds then the settledness check, which counts
    unsettled nodes in the Beam counter `components.UNSETTLED` of `stage`. When that count is zero the output is a
    star forest: one edge (node, smallest label of its component) per node that is not a centre."""

    def __init__(self, stage: str, rounds: int = components.ROUNDS):
        super().__init__()
        if rounds < 1:
            raise ValueError("rounds must be >= 1")
        self.stage, self.rounds = stage, rounds

    def expand(self, edges):
        for i in range(self.rounds):
            edges = (edges
                     | f"LargeStar{i + 1}" >> LargeStar()
                     | f"SmallStar{i + 1}" >> SmallStar())
        return (edges
                | "CheckBothWays" >> beam.FlatMap(_both_ways)
                | "CheckByNode" >> beam.GroupByKey()
                | "Check" >> beam.ParDo(_Settle(BeamCounters(self.stage))))


class WriteEdges(beam.PTransform):
    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, edges):
        return (edges
                | "AsRows" >> beam.MapTuple(lambda c, p: {"child": c, "parent": p})
                | WriteDataset(self.output_dir, EDGES, EDGES_SCHEMA, lambda r: (r["child"], r["parent"]),
                                        rows_per_shard=EDGES_ROWS_PER_SHARD))


def settle(work_dir: str, options_for_pass, stage: str, rounds: int = components.ROUNDS,
           max_passes: int = components.MAX_PASSES) -> tuple[int, str]:
    """Run further passes over the edge set in `work_dir` (written by `WriteEdges`) until no node is
    unsettled; the settled edges replace it. `options_for_pass(i)` gives each pass's PipelineOptions.
    Returns the number of extra passes run and the directory holding the settled edges."""
    for i in range(1, max_passes + 1):
        source, target = fs.join(work_dir, f"pass{i - 1}"), fs.join(work_dir, f"pass{i}")
        datasets.remove_dataset(target, EDGES)
        with beam.Pipeline(options=options_for_pass(i)) as p:
            _ = (p
                 | ReadDataset(source, EDGES)
                 | "AsEdges" >> beam.Map(lambda r: (r["child"], r["parent"]))
                 | ConnectedComponents(stage, rounds)
                 | WriteEdges(target))
        left = collect_counters(p.result, stage).get(components.UNSETTLED, 0)
        datasets.remove_dataset(source, EDGES)
        if left == 0:
            return i, target
    raise RuntimeError(f"connected components not settled after {max_passes} passes of {rounds} rounds")


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
    """Settled star edges + the meta parts (`_MetaPartitions`) -> clusters-table rows, the doc_ids that are
    removed (with their reason), and the number of input rows they are."""

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
                | "Sketch" >> PoolMap(sketch_row_group, processes, cfg.ngram, cfg.hasher(), cfg.lsh(),
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
             | "Components" >> ConnectedComponents(STAGE, cfg.cc_rounds))
    _ = stars | "SaveEdges" >> WriteEdges(fs.join(output_dir, WORK_DIR, "pass0"))
    _write_outputs(p, docs_dir, output_dir, schema, stars, meta, valid_rows, errors, count, processes)


def graph(p: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's (first-pass) pipeline, built from its flags without touching any output or needing the
    input yet (`webtext build --dry-run`). The output keeps the input's schema; the graph is built with the
    extract stage's documents schema, which is what the input is when the stages run in sequence."""
    from webtext.extract.schema import DOCUMENTS_SCHEMA

    build_pipeline(p, args.docs, args.output, DedupConfig.from_args(args), DOCUMENTS_SCHEMA, BeamCounters(STAGE),
                   local_processes(args))


def run_passes(docs_dir: str, output_dir: str, cfg: DedupConfig, schema: pa.Schema, options_for_pass,
               processes: int = 1) -> tuple[dict, int]:
    """Run the stage's pipelines into `output_dir` (its earlier datasets already removed): the main one and,
    when its clusters did not settle, further clustering passes and a last pipeline that writes the
    outputs from the settled clusters. `options_for_pass(i)` gives the PipelineOptions of each pipeline
    (pass 0 is the main one); `processes` local processes work on the documents' text. Returns the
    stage's counters and the number of clustering passes."""
    work = fs.join(output_dir, WORK_DIR)
    count = BeamCounters(STAGE)
    with beam.Pipeline(options=options_for_pass(0)) as p:
        build_pipeline(p, docs_dir, output_dir, cfg, schema, count, processes)
    counters = collect_counters(p.result, STAGE)
    passes = 1
    if counters.get(components.UNSETTLED, 0):
        # Clusters too deep for one pass: settle the saved edges, then choose again from the settled ones.
        extra, final_dir = settle(work, options_for_pass, STAGE, cfg.cc_rounds)
        passes += extra
        for name in (DOCUMENTS, CLUSTERS, ERRORS):
            datasets.remove_dataset(output_dir, name)
        with beam.Pipeline(options=options_for_pass(passes)) as p:
            errors, _, meta, valid_rows = _documents_and_meta(p, docs_dir, cfg, count, False, processes)
            stars = (p | "ReadEdges" >> ReadDataset(final_dir, EDGES)
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
    return counters, passes
