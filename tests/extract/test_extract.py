"""The extract stage end to end on the real Beam runner: a fetch directory of real pages, and real WARC files."""

from __future__ import annotations

import collections
import os

import pytest
from conftest import shared_path
from support_extract import dataset_bytes, eval_pages, expected_doc_id, run_extract, slow_page, write_fetch_dir

from webtext import cli
from webtext.extract import command
from webtext.extract.schema import ERROR_REASONS
from webtext.runtime import datasets, stats

ARTICLE = ("<html><head><title>Harbour notes</title></head><body><article>"
           + "".join(f"<p>Paragraph {i}: the ferry left the harbour at dawn while gulls circled the old "
                     f"lighthouse, and the fishermen mended their nets on the quay.</p>" for i in range(12))
           + "</article></body></html>")
ACCENTED = "Grüße aus Köln: Straßenbahn, Bürgersteig und Café"  # exists in cp1252, encoded differently in utf-8


def fetch_fixture(tmp_path, n_real: int = 4):
    """A fetch directory holding real pages and every kind of page the stage must not turn into a document."""
    real = eval_pages(n_real)
    pages = [{"url": p["url"], "body": p["body"], "subreddits": ["news", "science"], "score": 10 + i}
             for i, p in enumerate(real)]
    cp1252 = ARTICLE.replace("Harbour notes", ACCENTED).replace("Paragraph 3", ACCENTED)
    pages += [
        # No <meta> charset: only the charset the fetch stage recorded decodes it right.
        {"url": "http://cologne.example/gruesse", "body": cp1252.encode("cp1252"), "charset": "cp1252"},
        {"url": "http://big.example/page", "charset": "utf-8",
         "body": ARTICLE.replace("</body>", "<script>var d='" + "A" * 50_000_000 + "';</script></body>").encode()},
        {"url": "http://docs.example/paper.pdf", "body": b"%PDF-1.4 not a page", "content_type": "application/pdf"},
        {"url": "http://noise.example/", "body": bytes(range(256)) * 40},
        {"url": "http://blank.example/", "body": b"  \n\t \r\n "},
        {"url": "http://short.example/", "body": b"<html><body><p>Too short to keep.</p></body></html>"},
        {"url": "http://gone.example/", "body": b"<html><body>Not found</body></html>", "status": 404},
        # Its log row points at another page's record: the stage must notice, not extract the wrong page.
        {"url": "http://moved.example/", "body": ARTICLE.encode(), "offset_of": 0},
    ]
    rows = write_fetch_dir(tmp_path / "fetch", pages, not_fetched=["http://refused.example/"])
    return real, rows


@pytest.fixture(scope="module")
def fetch_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("extract")
    real, rows = fetch_fixture(tmp_path)
    status, result = run_extract(tmp_path / "out", "--fetch", tmp_path / "fetch", "--workers", 1)
    assert status == 0
    return tmp_path, real, rows, result


def test_fetched_pages_become_documents_with_their_link_metadata(fetch_run):
    tmp_path, real, log_rows, result = fetch_run
    docs = datasets.read_rows(str(tmp_path / "out"), "documents")
    by_url = {d["url"]: d for d in docs}
    assert set(by_url) == {p["url"] for p in real} | {"http://cologne.example/gruesse", "http://big.example/page"}
    log = {r["url"]: r for r in log_rows}
    for url, doc in by_url.items():
        assert doc["doc_id"] == expected_doc_id(url)
        assert doc["key"] == log[url]["key"] and doc["host"] == log[url]["host"]
        for field in ("score", "num_submissions", "subreddits", "first_created_utc", "payload_digest"):
            assert doc[field] == log[url][field], field
        assert doc["chars"] == len(doc["text"]) and doc["words"] >= 100
    for p in real:
        doc = by_url[p["url"]]
        assert doc["title"] and doc["language"]
        found = [s for s in p["with"] if s in doc["text"]]
        assert len(found) >= len(p["with"]) // 2, (p["url"], p["with"])
    assert by_url["http://cologne.example/gruesse"]["title"] == ACCENTED
    assert ACCENTED in by_url["http://cologne.example/gruesse"]["text"]
    assert "the fishermen mended their nets" in by_url["http://big.example/page"]["text"]
    assert [d["doc_id"] for d in docs] == sorted(d["doc_id"] for d in docs)  # one shard, sorted by id


def test_every_page_that_gives_no_document_is_counted_by_reason(fetch_run):
    tmp_path, real, _, result = fetch_run
    c = result["counters"]
    assert c["skipped_not_fetched"] == 1
    assert c["skipped_status"] == 1
    assert c["skipped_not_html"] == 1
    assert c["error_binary"] == 1 and c["error_blank_page"] == 1 and c["error_warc_mismatch"] == 1
    assert c["html_truncated"] == 1
    assert c["dropped_too_short"] == 1
    assert c["pages_in"] == len(real) + 7  # stored 2xx responses: all but the 404 and the refused
    assert c["pages_extracted"] == c["extract_ok"] == len(real) + 3
    assert c["documents"] == len(real) + 2
    errors = datasets.read_rows(str(tmp_path / "out"), "errors")
    assert collections.Counter(e["reason"] for e in errors) == {"binary": 1, "blank_page": 1, "warc_mismatch": 1}
    assert {e["reason"] for e in errors} <= set(ERROR_REASONS)  # the closed set the errors dataset documents
    assert {e["source"] for e in errors if e["reason"] != "warc_mismatch"} == {"http://noise.example/",
                                                                               "http://blank.example/"}
    assert stats.read_stats(str(tmp_path / "out"))["counters"] == c


def test_stats_record_the_run_configuration(fetch_run):
    tmp_path, _, _, result = fetch_run
    assert result["stage"] == "extract"
    assert result["config"] == {
        "fetch": str(tmp_path / "fetch"), "warc": None, "max_html_bytes": 2_000_000, "extract_timeout_s": 5.0,
        "extract_processes": 1, "recycle_after": 1000, "extract_memory_mb": 2048, "favor": "balanced",
        "include_tables": True, "rows_per_shard": 50_000,
        "filters": {"min_words": 100, "max_words": 100_000, "boilerplate_lines": True, "repetition": False,
                    "max_symbol_ratio": 0.0, "languages": []}}


def test_same_input_gives_identical_files_with_two_workers(fetch_run, tmp_path):
    first, _, _, _ = fetch_run
    run_extract(tmp_path / "again", "--fetch", first / "fetch", "--workers", 2, "--extract-processes", 1)
    for name in ("documents", "errors"):
        assert dataset_bytes(tmp_path / "again", name) == dataset_bytes(first / "out", name)


def test_the_same_page_under_a_second_url_is_a_document_of_its_own_with_the_same_text(tmp_path):
    real = eval_pages(4)
    pages = [{"url": p["url"], "body": p["body"]} for p in real]
    pages += [{"url": f"https://mirror{i}.example/copy", "body": p["body"], "score": 50 + i}
              for i, p in enumerate(real)]
    write_fetch_dir(tmp_path / "fetch", pages)
    _, result = run_extract(tmp_path / "out", "--fetch", tmp_path / "fetch", "--workers", 2,
                            "--extract-processes", 1)
    by_url = {d["url"]: d for d in datasets.read_rows(str(tmp_path / "out"), "documents")}
    assert len(by_url) == 8
    for i, p in enumerate(real):
        doc, twin = by_url[p["url"]], by_url[f"https://mirror{i}.example/copy"]
        assert (twin["text"], twin["title"], twin["date"]) == (doc["text"], doc["title"], doc["date"])
        assert twin["doc_id"] == expected_doc_id(twin["url"]) != doc["doc_id"] and twin["score"] == 50 + i
    assert result["counters"]["pages_reused"] == 4
    assert ("  of which same HTML as another page (text reused)", 4) in command.funnel(result)


def test_warc_files_from_other_crawls(tmp_path, capsys):
    """Common Crawl (gb2312, windows-1251, undeclared charsets) and ClueWeb records, plus a clipped file."""
    warc_dir = shared_path("warc")
    status = cli.main(["extract", "--warc", str(warc_dir / "*.warc.gz"), "--output", str(tmp_path / "out"),
                       "--workers", "1", "--min-words", "20"])
    assert status == 1  # a damaged input is an error of the run, after everything readable was used
    assert "damaged" in capsys.readouterr().err
    c = stats.read_stats(str(tmp_path / "out"))["counters"]
    assert c["pages_in"] == 16 + 29  # HTTP responses of warcfile and clueweb-quirk
    assert c["skipped_record_request"] == 17 and c["skipped_record_metadata"] == 16
    assert c["skipped_record_warcinfo"] == 2
    assert c["error_warc_damaged"] == 1
    docs = {d["url"]: d for d in datasets.read_rows(str(tmp_path / "out"), "documents")}
    assert len(docs) == c["documents"] >= 40
    russian = docs["http://01spb.ru/company/"]  # windows-1251 declared in the header
    assert russian["language"] == "ru" and "пожарной безопасности" in russian["text"]
    chinese = docs["http://0760.jxtdw.com/area/sanxiang/"]  # gb2312
    assert chinese["language"] == "zh" and "\ufffd" not in chinese["text"]
    japanese = [d for u, d in docs.items() if "uraharajuku.st" in u]  # ClueWeb, EUC-JP
    assert len(japanese) == 29 and all(d["language"] == "ja" for d in japanese)
    assert all(d["score"] is None and d["subreddits"] == [] for d in docs.values())
    errors = datasets.read_rows(str(tmp_path / "out"), "errors")
    assert [(e["reason"], os.path.basename(e["source"])) for e in errors] == [("warc_damaged", "clipped.warc.gz")]
    assert "truncated" in errors[0]["detail"]


def test_a_clipped_warc_keeps_the_records_before_the_cut(tmp_path):
    data = shared_path("warc", "warcfile.warc.gz").read_bytes()
    (tmp_path / "cut.warc.gz").write_bytes(data[:len(data) // 2])
    status, result = run_extract(tmp_path / "out", "--warc", tmp_path / "cut.warc.gz", "--workers", 1,
                                 "--min-words", 0, expect=1)
    assert status == 1  # damaged input
    c = result["counters"]
    assert c["error_warc_damaged"] == 1
    assert c["pages_in"] == 6 and c["extract_ok"] == 6  # every response before the cut
    errors = datasets.read_rows(str(tmp_path / "out"), "errors")
    assert errors[0]["position"] == 61090 and "truncated" in errors[0]["detail"]


def test_missing_fetch_log_is_a_clear_error(tmp_path, capsys):
    status = cli.main(["extract", "--fetch", str(tmp_path), "--output", str(tmp_path / "out")])
    assert status == 2
    assert capsys.readouterr().err == (f"webtext extract: error: {tmp_path}: no dataset 'log' (log-*.parquet); "
                                       "run `webtext fetch` first\n")
    assert not (tmp_path / "out").exists()  # nothing written before the input is checked


def test_warc_glob_that_matches_nothing_is_a_clear_error(tmp_path, capsys):
    status = cli.main(["extract", "--warc", str(tmp_path / "*.warc.gz"), "--output", str(tmp_path / "out")])
    assert status == 2
    assert capsys.readouterr().err.startswith("webtext extract: error: no file matches ")


def test_pages_the_extractor_cannot_handle_become_error_rows(tmp_path):
    slow = slow_page()
    deep = "<html><body>" + "<div>" * 100_000 + "deep text " * 50 + "</div>" * 100_000 + "</body></html>"
    pages = [{"url": "http://slow.example/", "body": slow.encode()},
             {"url": "http://deep.example/", "body": deep.encode()},
             {"url": "http://fine.example/", "body": ARTICLE.encode()}]
    write_fetch_dir(tmp_path / "fetch", pages)
    _, result = run_extract(tmp_path / "out", "--fetch", tmp_path / "fetch", "--workers", 1,
                            "--extract-processes", 1, "--extract-timeout", 1.5)
    c = result["counters"]
    assert (c["extract_timeout"], c["extract_empty"], c["extract_ok"]) == (1, 1, 1)
    assert c["children_replaced"] == 1
    errors = datasets.read_rows(str(tmp_path / "out"), "errors")
    assert [(e["source"], e["reason"]) for e in errors] == [("http://deep.example/", "extract_empty"),
                                                            ("http://slow.example/", "extract_timeout")]
    assert {e["reason"] for e in errors} <= set(ERROR_REASONS)
    assert "1.5 s" in errors[1]["detail"] and "part-0.warc.gz" in errors[1]["detail"]
    docs = datasets.read_rows(str(tmp_path / "out"), "documents")
    assert [d["url"] for d in docs] == ["http://fine.example/"]
