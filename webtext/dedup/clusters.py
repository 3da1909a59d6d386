"""How candidates become clusters, free of Beam: the edges between documents that share an LSH bucket,
the similarity of a candidate pair from its verification payloads, and which member of a cluster is kept
(with the clusters-table rows that say so)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from webtext.dedup import minhash
from webtext.dedup.schema import EXACT, KEPT, NEAR


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
