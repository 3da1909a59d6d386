import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from webtext.dedup import components, pipeline
from webtext.dedup.schema import EDGES
from webtext.runtime import datasets
from webtext.runtime.stats import collect_counters

STAGE = "cc_test"


def _options(_pass=0):
    return PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"])


def _stars(edges, rounds, out_dir):
    """One pass of ConnectedComponents; returns (output edges, unsettled count)."""
    with beam.Pipeline(options=_options()) as p:
        _ = (p | beam.Create(sorted(edges))
             | pipeline.ConnectedComponents(STAGE, rounds)
             | pipeline.WriteEdges(str(out_dir)))
    unsettled = collect_counters(p.result, STAGE).get(components.UNSETTLED, 0)
    rows = datasets.read_rows(str(out_dir), EDGES)
    return {(r["child"], r["parent"]) for r in rows}, unsettled


def edge(a: str, b: str) -> tuple[str, str] | None:
    """The edge between two labels as (child, parent) with child > parent; None for a self-loop."""
    if a == b:
        return None
    return (a, b) if a > b else (b, a)


def _as_star_forest(labels: dict) -> set:
    return {(node, root) for node, root in labels.items() if node != root}


def test_node_operations():
    # large-star at c: neighbours a, d, e -> the larger ones point to the smallest (a)
    assert components.large_star("c", ["a", "d", "e"]) == [("d", "a"), ("e", "a")]
    assert components.large_star("a", ["b", "c"]) == [("b", "a"), ("c", "a")]
    # small-star at d with smaller neighbours b, c -> d and c point to b
    assert components.small_star("d", ["c", "b"]) == [("d", "b"), ("c", "b")]
    assert not components.unsettled("a", ["b", "c"])       # a centre
    assert not components.unsettled("c", ["a"])            # a leaf
    assert components.unsettled("c", ["a", "b"])           # two parents
    assert components.unsettled("b", ["a", "c"])           # a parent with a parent


def _random_graph(rng, nodes, edges):
    labels = [f"n{rng.randrange(10**9):09d}" for _ in range(nodes)]
    return {edge(rng.choice(labels), rng.choice(labels)) for _ in range(edges)} - {None}


@pytest.mark.parametrize("seed", [1, 2])
def test_random_graphs_settle_to_their_components(tmp_path, seed):
    rng = random.Random(seed)
    graph = _random_graph(rng, 400, 300)   # many components: trees, cycles, isolated pairs
    got, unsettled = _stars(graph, components.ROUNDS, tmp_path)
    assert unsettled == 0
    assert got == _as_star_forest(components.components_in_memory(graph))


def _path(n):
    # Labels in order along the path: the slowest case for large-star/small-star.
    labels = [f"p{i:04d}" for i in range(n)]
    return {edge(a, b) for a, b in zip(labels, labels[1:])}, labels


def test_a_long_path_needs_several_passes_and_ends_in_one_star(tmp_path):
    graph, labels = _path(300)
    work = tmp_path / "work"
    _, unsettled = _stars(graph, 2, work / "pass0")
    assert unsettled > 0   # two rounds are not enough for 300 nodes in a row
    passes, final = pipeline.settle(str(work), _options, STAGE, rounds=2)
    assert passes >= 2
    rows = datasets.read_rows(final, EDGES)
    assert {(r["child"], r["parent"]) for r in rows} == {(x, labels[0]) for x in labels[1:]}
    assert not datasets.shard_paths(str(work / "pass0"), EDGES)  # earlier passes cleaned up


def test_settle_gives_up_after_max_passes(tmp_path):
    graph, _ = _path(64)
    _stars(graph, 1, tmp_path / "pass0")
    with pytest.raises(RuntimeError, match="not settled"):
        pipeline.settle(str(tmp_path), _options, STAGE, rounds=1, max_passes=1)
