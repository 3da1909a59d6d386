"""Connected components of a graph held as a PCollection of edges, computed in Beam so that the work is
spread over workers: large-star / small-star (Kiveris et al., "Connected Components in MapReduce and
Beyond", SoCC 2014).

An edge is a tuple (child, parent) of node labels (strings) with child > parent. Each operation is one
GroupByKey over nodes, so no task ever holds more than one node's neighbourhood:

- large-star at node u: m = the smallest of u and its neighbours; every neighbour v > u is linked to m.
- small-star at node u: m = the smallest of u and its smaller neighbours; each of those and u is linked to m.

Both keep every component connected, and repeating them turns each component into a star whose centre is
its smallest label: every other node has exactly one neighbour, the centre. That is the fixed point, and it
is checked node by node (`unsettled`): a node is settled when it has no smaller neighbour (a centre) or
exactly one smaller neighbour and no larger one (a leaf).

Beam has no loops, so `ConnectedComponents` unrolls `rounds` rounds (one large-star and one small-star
each) into the graph and ends with a check that counts unsettled nodes. Most graphs settle in O(log n)
rounds (the paper proves O(log^2 n)); when the count is not zero, `settle` runs further passes of the
same transform over the edge set materialised on disk until it is. The worst case is a long path with
labels in adversarial order, which halves its length about once per round: a path of 2^k nodes needs about
k rounds, so the default of 8 rounds per pass settles any cluster of a few hundred chained documents in
one pass, and longer chains cost one more pass per further 8 rounds.
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import pyarrow as pa

from webtext.runtime import datasets, fs
from webtext.runtime.beam import ReadDataset, WriteDataset
from webtext.runtime.stats import BeamCounters, Count, collect_counters

ROUNDS = 8          # large-star + small-star rounds unrolled into one pipeline pass
MAX_PASSES = 32     # passes `settle` runs before it gives up (never reached by a finite graph in practice)
UNSETTLED = "cc_unsettled_nodes"  # the counter a pass's final check writes

EDGES = "edges"
EDGES_SCHEMA = pa.schema([
    pa.field("child", pa.string(), nullable=False),
    pa.field("parent", pa.string(), nullable=False),
])
EDGES_ROWS_PER_SHARD = 2_000_000


def edge(a: str, b: str) -> tuple[str, str] | None:
    """The edge between two labels as (child, parent) with child > parent; None for a self-loop."""
    if a == b:
        return None
    return (a, b) if a > b else (b, a)


# Pure node operations -------------------------------------------------------------------------------------

def large_star(node: str, neighbours: Iterable[str]) -> list[tuple[str, str]]:
    neighbours = set(neighbours)
    m = min(min(neighbours), node)
    return [(v, m) for v in sorted(neighbours) if v > node]


def small_star(node: str, parents: Iterable[str]) -> list[tuple[str, str]]:
    """`parents` are the node's smaller neighbours (it is the child of every edge it is keyed by)."""
    parents = set(parents)
    m = min(parents)
    return [(node, m)] + [(v, m) for v in sorted(parents) if v != m]


def unsettled(node: str, neighbours: Iterable[str]) -> bool:
    """True unless the node is a star centre (no smaller neighbour) or a leaf (one smaller, no larger)."""
    smaller = larger = 0
    for v in set(neighbours):
        if v < node:
            smaller += 1
        else:
            larger += 1
    return smaller > 1 or (smaller == 1 and larger > 0)


def components_in_memory(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """node -> smallest label of its component, by union-find: the reference the tests compare against."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            parent[hi] = lo
    return {x: find(x) for x in list(parent)}


# Beam transforms ------------------------------------------------------------------------------------------

def _both_ways(e):
    return [(e[0], e[1]), (e[1], e[0])]


class LargeStar(beam.PTransform):
    def expand(self, edges):
        return (edges
                | "BothWays" >> beam.FlatMap(_both_ways)
                | "ByNode" >> beam.GroupByKey()
                | "Link" >> beam.FlatMapTuple(large_star))


class SmallStar(beam.PTransform):
    def expand(self, edges):
        return (edges
                | "ByChild" >> beam.GroupByKey()
                | "Link" >> beam.FlatMapTuple(small_star))


class _Settle(beam.DoFn):
    """The final check: passes every edge on once (from its child's side) and counts unsettled nodes."""

    def __init__(self, count: Count):
        self.count = count

    def process(self, element):
        node, neighbours = element
        neighbours = set(neighbours)
        if unsettled(node, neighbours):
            self.count(UNSETTLED)
        for v in sorted(neighbours):
            if v < node:
                yield (node, v)


class ConnectedComponents(beam.PTransform):
    """Edges in, edges out: `rounds` large-star/small-star rounds then the settledness check, which counts
    unsettled nodes in the Beam counter `UNSETTLED` of `stage`. When that count is zero the output is a
    star forest: one edge (node, smallest label of its component) per node that is not a centre."""

    def __init__(self, stage: str, rounds: int = ROUNDS):
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


def settle(work_dir: str, options_for_pass, stage: str, rounds: int = ROUNDS,
           max_passes: int = MAX_PASSES) -> tuple[int, str]:
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
        left = collect_counters(p.result, stage).get(UNSETTLED, 0)
        datasets.remove_dataset(source, EDGES)
        if left == 0:
            return i, target
    raise RuntimeError(f"connected components not settled after {max_passes} passes of {rounds} rounds")
