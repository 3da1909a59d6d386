"""Connected components of a graph held as a PCollection of edges, computed in Beam so that the work is
spread over workers: large-star / small-star (Kiveris et al., "Connected Components in MapReduce and
Beyond", SoCC 2014). This module holds the node operations, free of Beam; the transforms that apply them
(`ConnectedComponents`, `settle`) are in `webtext.dedup.pipeline`.

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

from collections.abc import Iterable

ROUNDS = 8          # large-star + small-star rounds unrolled into one pipeline pass
MAX_PASSES = 32     # passes `settle` runs before it gives up (never reached by a finite graph in practice)
UNSETTLED = "cc_unsettled_nodes"  # the counter a pass's final check writes


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
