import collections
import math
import os
import random

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_path
from support_dedup import doc_row, edit_to_jaccard, exact_jaccard, real_texts, shuffled, write_documents

from webtext import cli
from webtext.dedup import minhash
from webtext.dedup.clusters import keep_order
from webtext.dedup.config import DedupConfig
from webtext.dedup.pipeline import RowGroups
from webtext.dedup.schema import CLUSTERS, CLUSTERS_SCHEMA, DOCUMENTS
from webtext.extract.schema import DOCUMENTS_SCHEMA
from webtext.runtime import datasets
from webtext.runtime.errors import ERRORS
from webtext.runtime.stats import read_stats

LEVELS = (0.95, 0.85, 0.7, 0.5)
PAIRS_PER_LEVEL = 20
EXACT_COPIES = 8
UNIQUE = 20
SIGMAS = 4  # margins on detection counts: 4 standard deviations of the binomial the S-curve predicts


def dedup(docs, out, workers=1, processes=1, **cfg) -> dict:
    """`webtext dedup` with the flags of `cfg` (DedupConfig's fields); returns its `_stats.json`.
    `processes`: the stage's own local processes (`--workers`, with the runner in memory); `workers`: the
    DirectRunner's processes instead."""
    argv = ["dedup", "--docs", docs, "--output", out, "--workers", str(processes)]
    for name, value in cfg.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    if workers > 1:
        argv += [f"--beam-option=--direct_num_workers={workers}",
                 "--beam-option=--direct_running_mode=multi_processing"]
    assert cli.main(argv) == 0
    return read_stats(out)


def run(tmp_path, name, input_rows, workers=1, shards=1, processes=1, **cfg):
    docs = write_documents(tmp_path / f"{name}-in", input_rows, shards=shards)
    out = str(tmp_path / f"{name}-out")
    return out, dedup(docs, out, workers, processes, **cfg)


@pytest.fixture(scope="module")
def texts():
    return real_texts(shared_path("web", "trafilatura-eval"),
                      len(LEVELS) * PAIRS_PER_LEVEL + EXACT_COPIES + UNIQUE + 1)


@pytest.fixture(scope="module")
def planted(texts):
    """Rows with planted near duplicates (one variant per base page, at each Jaccard level), exact copies
    under other URLs (text differing only in case, spacing and punctuation), tiny documents and unique
    pages; and the planted pairs as (base doc_id, variant doc_id, exact Jaccard, level)."""
    rng = random.Random(5)
    rows, pairs = [], []
    it = iter(texts)
    for level in LEVELS:
        for i in range(PAIRS_PER_LEVEL):
            base = next(it)
            variant = edit_to_jaccard(base, level, tag=f"{level}x{i}")
            a = doc_row(f"https://base.example/{level}/{i}", base, rng.choice([None, 3, 10]))
            b = doc_row(f"https://variant.example/{level}/{i}", variant, rng.choice([None, 3, 10]))
            rows += [a, b]
            pairs.append((a["doc_id"], b["doc_id"], exact_jaccard(base, variant), level))
    for i in range(EXACT_COPIES):
        text = next(it)
        copy = "  " + text.upper().replace(".", " !! ").replace(" ", "\n ") + " ..."
        rows += [doc_row(f"https://orig.example/{i}", text, 5),
                 doc_row(f"https://mirror.example/{i}", copy, [5, 7, None, 5][i % 4])]
    rows += [doc_row("https://tiny.example/1", "Hello world", 2),
             doc_row("https://tiny.example/2", "HELLO, world!", 4),
             doc_row("https://tiny.example/3", "Goodbye now", 4),
             doc_row("https://tiny.example/4", "a", 1),
             doc_row("https://tiny.example/5", "", 1),
             doc_row("https://tiny.example/6", "!!! ???", 1)]
    for i in range(UNIQUE):
        rows.append(doc_row(f"https://unique.example/{i}", next(it), rng.choice([None, 1, 2])))
    return rows, pairs


@pytest.fixture(scope="module")
def verified(planted, tmp_path_factory):
    rows, _ = planted
    return run(tmp_path_factory.mktemp("verified"), "v", rows)


def _clusters(out):
    rows = datasets.read_rows(out, CLUSTERS)
    by_doc = {r["doc_id"]: r for r in rows}
    assert len(by_doc) == len(rows)
    return by_doc


def _together(pairs, clusters):
    """Planted pair -> whether both documents ended in one cluster."""
    return {(a, b): a in clusters and b in clusters and clusters[a]["cluster_id"] == clusters[b]["cluster_id"]
            for a, b, _, _ in pairs}


def _report(name, pairs, together, bands, rows, threshold):
    lines = []
    high = [p for p in pairs if p[2] >= threshold + 0.05]
    recall = sum(together[p[:2]] for p in high) / len(high)
    found = [p for p in pairs if together[p[:2]]]
    precision = sum(p[2] >= threshold - 0.05 for p in found) / max(1, len(found))
    for level in LEVELS:
        ps = [p for p in pairs if p[3] == level]
        lines.append(f"J~{level}: {sum(together[p[:2]] for p in ps)}/{len(ps)} found, S-curve expects "
                     f"{sum(minhash.candidate_probability(p[2], bands, rows) for p in ps):.1f}")
    print(f"{name}: recall (J >= {threshold + 0.05:.2f}) {recall:.3f}, precision (J >= {threshold - 0.05:.2f}) "
          f"{precision:.3f}; " + "; ".join(lines))
    return recall, precision


def test_planted_pairs_have_the_jaccard_they_were_made_for(planted):
    _, pairs = planted
    for _, _, j, level in pairs:
        assert abs(j - level) < 0.04


def test_planted_near_duplicates_found_as_the_s_curve_predicts_and_verified(planted, verified):
    rows, pairs = planted
    out, stats = verified
    bands, r, threshold = stats["config"]["bands"], stats["config"]["rows"], stats["config"]["threshold"]
    clusters = _clusters(out)
    together = _together(pairs, clusters)
    for level in LEVELS:
        ps = [p for p in pairs if p[3] == level]
        found = sum(together[p[:2]] for p in ps)
        if level < threshold:
            assert found == 0, level  # exact verification stops every pair below the threshold
            continue
        probs = [minhash.candidate_probability(p[2], bands, r) for p in ps]
        expected, sd = sum(probs), math.sqrt(sum(q * (1 - q) for q in probs))
        assert found >= expected - SIGMAS * sd - 1, (level, found, expected)
    recall, precision = _report("verify=exact", pairs, together, bands, r, threshold)
    assert recall >= 0.9 and precision == 1.0
    # every removal is justified: its Jaccard with the kept document reaches the threshold
    texts = {row["doc_id"]: row["text"] for row in rows}
    kept_of = {c["cluster_id"]: c["doc_id"] for c in clusters.values() if c["kept"]}
    for c in clusters.values():
        if not c["kept"]:
            assert exact_jaccard(texts[c["doc_id"]], texts[kept_of[c["cluster_id"]]]) >= threshold


def test_exact_copies_tiny_documents_and_the_keep_rule(planted, verified):
    rows, _ = planted
    out, stats = verified
    clusters = _clusters(out)
    by_url = {row["url"]: row for row in rows}
    for i in range(EXACT_COPIES):
        orig, mirror = by_url[f"https://orig.example/{i}"], by_url[f"https://mirror.example/{i}"]
        a, b = clusters[orig["doc_id"]], clusters[mirror["doc_id"]]
        assert a["cluster_id"] == b["cluster_id"] == min(orig["doc_id"], mirror["doc_id"])
        assert a["cluster_size"] == 2 and {a["reason"], b["reason"]} == {"kept", "exact_duplicate"}
        winner = min([orig, mirror], key=lambda d: keep_order((d["doc_id"], d["score"], None)))
        assert clusters[winner["doc_id"]]["kept"]
    hello, hello2 = by_url["https://tiny.example/1"], by_url["https://tiny.example/2"]
    assert clusters[hello["doc_id"]]["reason"] == "exact_duplicate"       # score 2 loses to 4
    assert clusters[hello2["doc_id"]]["reason"] == "kept"
    for url in ("https://tiny.example/3", "https://tiny.example/4"):
        assert by_url[url]["doc_id"] not in clusters                     # short but unique: kept, no cluster
    empty = {by_url["https://tiny.example/5"]["doc_id"], by_url["https://tiny.example/6"]["doc_id"]}
    assert {clusters[d]["reason"] for d in empty} == {"kept", "exact_duplicate"}  # nothing left = same text
    assert stats["counters"]["shorter_than_shingle"] == 4
    assert stats["counters"]["empty_after_normalisation"] == 2
    # the keep rule in every cluster: highest score (none = lowest), then smallest doc_id
    score = {row["doc_id"]: row["score"] for row in rows}
    members = collections.defaultdict(list)
    for c in clusters.values():
        members[c["cluster_id"]].append(c)
    for cid, ms in members.items():
        assert cid == min(m["doc_id"] for m in ms) and all(m["cluster_size"] == len(ms) for m in ms)
        best = min(ms, key=lambda m: keep_order((m["doc_id"], score[m["doc_id"]], None)))
        assert [m["doc_id"] for m in ms if m["kept"]] == [best["doc_id"]]


def test_outputs_keep_the_input_schema_and_every_other_document(planted, verified):
    rows, _ = planted
    out, stats = verified
    clusters = _clusters(out)
    removed = {d for d, c in clusters.items() if not c["kept"]}
    kept = datasets.read_rows(out, DOCUMENTS)
    assert sorted(kept, key=lambda r: r["doc_id"]) == sorted(
        (r for r in rows if r["doc_id"] not in removed), key=lambda r: r["doc_id"])
    in_schema = pq.read_schema(datasets.shard_paths(out.replace("-out", "-in"), DOCUMENTS)[0])
    assert datasets.read_table(out, DOCUMENTS).schema.equals(in_schema)
    assert datasets.read_table(out, CLUSTERS).schema.equals(CLUSTERS_SCHEMA)
    assert datasets.read_rows(out, ERRORS) == []
    reasons = collections.Counter(c["reason"] for c in clusters.values())
    assert stats["drops"] == {"exact_duplicate": reasons["exact_duplicate"],
                              "near_duplicate": reasons["near_duplicate"], "duplicate_doc_id": 0}
    assert stats["documents_out"] == len(kept) == len(rows) - len(removed)
    assert set(stats["s_curve"]) >= {"0.5", "0.7", "0.8", "0.9"}
    assert read_stats(out)["cc_passes"] == 1
    assert not os.path.exists(os.path.join(out, "_work"))


def test_without_verification_the_s_curve_decides(planted, tmp_path):
    rows, pairs = planted
    out, stats = run(tmp_path, "n", rows, verify="none")
    bands, r, threshold = stats["config"]["bands"], stats["config"]["rows"], stats["config"]["threshold"]
    together = _together(pairs, _clusters(out))
    for level in LEVELS:
        ps = [p for p in pairs if p[3] == level]
        probs = [minhash.candidate_probability(p[2], bands, r) for p in ps]
        expected, sd = sum(probs), math.sqrt(sum(q * (1 - q) for q in probs))
        found = sum(together[p[:2]] for p in ps)
        assert expected - SIGMAS * sd - 1 <= found <= expected + SIGMAS * sd + 1, (level, found, expected)
    _report("verify=none", pairs, together, bands, r, threshold)
    assert "rejected_edges" not in stats["counters"]


def test_estimated_verification_and_explicit_bands(planted, tmp_path):
    rows, pairs = planted
    out, stats = run(tmp_path, "e", rows, verify="estimate", bands=20, rows=5)
    assert (stats["config"]["bands"], stats["config"]["rows"]) == (20, 5)
    together = _together(pairs, _clusters(out))
    for a, b, _j, level in pairs:
        if level == 0.5:
            assert not together[(a, b)]   # estimate within a few sigma of 0.5 never reaches 0.8
        if level == 0.95:
            assert together[(a, b)]
    assert stats["counters"]["rejected_edges"] > 0


def _chain(text, links, target=0.9):
    docs = [text]
    for i in range(links - 1):
        docs.append(edit_to_jaccard(docs[-1], target, tag=f"chain{i}"))
    return docs


def test_transitive_chain_ends_in_one_cluster_over_several_passes(texts, tmp_path):
    long_text = " ".join(texts[-1].split() + texts[-2].split())[:12000]
    chain = _chain(long_text, 24)
    assert exact_jaccard(chain[0], chain[-1]) < 0.5            # only the links make it one cluster
    rows = [doc_row(f"https://chain.example/{i}", t, 1, doc_id=f"c{i:03d}") for i, t in enumerate(chain)]
    rows.append(doc_row("https://other.example/", texts[0], 1))
    out, stats = run(tmp_path, "chain", shuffled(rows), cc_rounds=2)
    clusters = _clusters(out)
    assert {c["cluster_id"] for d, c in clusters.items() if d.startswith("c")} == {"c000"}
    assert clusters["c000"]["cluster_size"] == 24 and clusters["c000"]["kept"]
    assert rows[-1]["doc_id"] not in clusters
    assert stats["cc_passes"] > 1
    assert [r["doc_id"] for r in datasets.read_rows(out, DOCUMENTS)] == sorted(["c000", rows[-1]["doc_id"]])
    assert not os.path.exists(os.path.join(out, "_work"))


def test_identical_files_for_shuffled_input_two_processes_and_two_runner_workers(planted, tmp_path):
    rows, _ = planted
    subset = rows[:24] + rows[2 * len(LEVELS) * PAIRS_PER_LEVEL:][:20]   # pairs, exact copies, tiny docs
    a, _ = run(tmp_path, "a", subset)
    b, _ = run(tmp_path, "b", shuffled(subset), shards=3, processes=2)
    c, _ = run(tmp_path, "c", shuffled(subset, seed=2), shards=2, workers=2)
    for other in (b, c):
        for name in (DOCUMENTS, CLUSTERS, ERRORS):
            files_a, files_b = datasets.shard_paths(a, name), datasets.shard_paths(other, name)
            assert [os.path.basename(f) for f in files_a] == [os.path.basename(f) for f in files_b]
            assert [open(f, "rb").read() for f in files_a] == [open(f, "rb").read() for f in files_b], name
        assert not os.path.exists(os.path.join(other, "_work"))
    assert len(datasets.read_rows(a, CLUSTERS)) > 10


def test_empty_input_through_the_command(tmp_path):
    docs = write_documents(tmp_path / "in", [])
    out = tmp_path / "out"
    assert cli.main(["dedup", "--docs", docs, "--output", str(out), "--workers", "1"]) == 0
    assert datasets.read_rows(str(out), DOCUMENTS) == []
    assert datasets.read_rows(str(out), CLUSTERS) == []
    stats = read_stats(str(out))
    assert stats["documents_out"] == 0 and stats["drops"]["near_duplicate"] == 0


def test_bad_rows_go_to_errors(texts, tmp_path):
    from webtext.extract.schema import DOCUMENTS_SCHEMA

    loose = pa.schema([f.with_nullable(True) for f in DOCUMENTS_SCHEMA])
    rows = [doc_row("https://ok.example/1", texts[0], 1),
            doc_row("https://bad.example/no-id", texts[1], 1, doc_id=""),
            doc_row("https://bad.example/no-text", None, 1),
            doc_row("https://twice.example/a", texts[2], 1, doc_id="same"),
            doc_row("https://twice.example/b", texts[3], 1, doc_id="same")]
    docs = write_documents(tmp_path / "in", rows, schema=loose)
    out = str(tmp_path / "out")
    stats = dedup(docs, out)
    errors = datasets.read_rows(out, ERRORS)
    assert sorted((e["reason"], e["source"]) for e in errors) == [
        ("duplicate_doc_id", "https://twice.example/a"), ("duplicate_doc_id", "https://twice.example/b"),
        ("missing_doc_id", "https://bad.example/no-id"), ("missing_text", "https://bad.example/no-text")]
    assert all(e["stage"] == "dedup" and e["detail"] for e in errors)
    assert [r["url"] for r in datasets.read_rows(out, DOCUMENTS)] == ["https://ok.example/1"]
    assert datasets.read_table(out, DOCUMENTS).schema.equals(loose)
    assert stats["drops"]["duplicate_doc_id"] == 2


def test_bad_settings_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="together"):
        DedupConfig(bands=4)
    with pytest.raises(ValueError, match="at most"):
        DedupConfig(bands=20, rows=10)
    with pytest.raises(ValueError, match="--threshold"):
        DedupConfig(threshold=1.0)
    with pytest.raises(ValueError, match="--fn-weight"):
        DedupConfig(fn_weight=1.5)
    docs = write_documents(tmp_path / "in", [])
    no_score = write_documents(tmp_path / "no-score", [doc_row("https://a.example/", "some text")],
                               schema=pa.schema([f for f in DOCUMENTS_SCHEMA if f.name != "score"]))
    out = str(tmp_path / "o")
    for flags, message in [(["--docs", docs, "--bands", "3"], "--bands and --rows together"),
                           (["--docs", str(tmp_path / "nowhere")], "no dataset 'documents'"),
                           (["--docs", no_score], "lack the columns ['score']")]:
        capsys.readouterr()
        assert cli.main(["dedup", "--output", out] + flags) == 2
        err = capsys.readouterr().err
        assert err.startswith("webtext dedup: error: ") and message in err, err
    assert not os.path.exists(out)   # nothing written before the input and flags are checked


def test_an_optimum_of_one_band_is_accepted(tmp_path):
    """datasketch's MinHashLSH refuses a single band; the stage takes the optimum as it is."""
    assert DedupConfig(threshold=0.99, fn_weight=0.1).lsh() == (1, 128)
    docs = write_documents(tmp_path / "in", [doc_row("https://a.example/", "some text")])
    stats = dedup(docs, str(tmp_path / "out"), threshold=0.99, fn_weight=0.1)
    assert (stats["config"]["bands"], stats["config"]["rows"]) == (1, 128)
    assert stats["documents_out"] == 1


def test_a_missing_input_is_an_error_not_an_empty_output(tmp_path):
    """The documents are listed when the pipeline runs: an input gone by then fails the run."""
    with pytest.raises(Exception, match="no dataset 'documents'"):
        with beam.Pipeline("DirectRunner") as p:
            _ = p | RowGroups(str(tmp_path / "nowhere"))
