"""`webtext fetch` end to end on the real Beam runner against the loopback web: the log contract, WARC
records at the logged offsets, resume after a clean run and after a killed run, and 1 vs 2 workers."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from support_webserver import LoopbackWeb, Robots, loopback_only, write_links

from webtext.cli import main
from webtext.fetch.schema import LOG_ERRORS
from webtext.runtime import datasets, stats, warc

REPO = Path(__file__).resolve().parents[2]

# The contract the extract stage reads (docs/formats.md, Fetch): names and types.
CONTRACT = {
    "url": pa.string(), "key": pa.string(), "host": pa.string(), "final_url": pa.string(), "status": pa.int32(),
    "error": pa.string(), "error_detail": pa.string(), "attempts": pa.int32(), "bytes": pa.int64(),
    "content_type": pa.string(), "charset": pa.string(), "charset_source": pa.string(), "elapsed_s": pa.float64(),
    "fetched_at": pa.string(), "warc_file": pa.string(), "warc_offset": pa.int64(), "warc_length": pa.int64(),
    "payload_digest": pa.string(), "ip": pa.string(), "score": pa.int64(), "num_submissions": pa.int64(),
    "subreddits": pa.list_(pa.string()), "first_created_utc": pa.int64(),
}


@pytest.fixture(scope="module")
def web():
    from conftest import shared_path

    shared_path("web", "trafilatura-eval")
    robots = {"deny.test": Robots(200, "User-agent: *\nDisallow: /\n")}
    with LoopbackWeb(robots=robots, bombs=False) as w:
        yield w


@pytest.fixture(autouse=True)
def _guard(monkeypatch):
    refused = loopback_only(monkeypatch)
    yield
    assert refused == []


def fetch_args(web, links, out, *extra):
    return ["fetch", "--links", str(links), "--output", str(out), *web.resolve_args(), "--host-delay", "0",
            "--backoff", "0.01", "--retries", "0", "--timeout", "3", "--workers", "1", *extra]


def check_warc_records(out: Path, rows: list[dict], web=None, pages: dict | None = None) -> None:
    stored = [r for r in rows if r["warc_file"]]
    assert len({(r["warc_file"], r["warc_offset"]) for r in stored}) == len(stored)  # no record twice
    for r in stored:
        assert not Path(r["warc_file"]).is_absolute() and r["warc_file"].startswith("warc/")
        with open(out / r["warc_file"], "rb") as f:
            f.seek(r["warc_offset"])
            rec = warc.read_response_at(f, r["warc_file"])
        assert rec.url == r["final_url"] and len(rec.body) == r["bytes"]
        assert warc.payload_digest(rec.body) == r["payload_digest"]
        if pages is not None and r["url"] in pages:
            assert rec.body == web.page_bytes(pages[r["url"]])


def test_fetch_end_to_end_then_resume(web, tmp_path):
    pages = {web.url(f"e2e{h}.test", web.page_path(h * 4 + i)): h * 4 + i for h in range(5) for i in range(4)}
    flaky = web.url("e2eflaky.test", "/x/flaky/e2e?fail=1&status=503")
    failing = {flaky: ("http_5xx", True), web.url("e2e0.test", "/x/status/404"): ("http_4xx", False),
               web.url("deny.test", "/x/ok"): ("robots", False),
               web.url("e2e1.test", "/x/pdf"): ("content_type", False),
               "": ("bad_url", False)}
    links = list(pages) + list(failing)
    write_links(tmp_path / "links", links)
    out = tmp_path / "fetch"
    assert main(fetch_args(web, tmp_path / "links", out)) == 0

    table = datasets.read_table(str(out), "log")
    for name, typ in CONTRACT.items():
        assert table.schema.field(name).type == typ, name
    rows = table.to_pylist()
    assert sorted(r["url"] for r in rows) == sorted(links)  # every link exactly once
    by = {r["url"]: r for r in rows}
    for url in pages:
        r = by[url]
        assert (r["error"], r["status"], r["content_type"], r["ip"]) == (None, 200, "text/html", "127.0.0.1")
        assert r["charset"] and r["charset_source"] in ("bom", "header", "meta", "detector", "default")
        assert r["fetched_at"].endswith("Z") and r["elapsed_s"] > 0 and r["attempts"] == 1
        assert r["subreddits"] == ["test"] and r["score"] >= 3 and r["run"] == 1
    assert all(r["error"] is None or r["error"] in LOG_ERRORS for r in rows)  # the closed set
    for url, (error, transient) in failing.items():
        assert (by[url]["error"], by[url]["transient"], by[url]["warc_file"]) == (error, transient, None), url
    check_warc_records(out, rows, web, pages)
    errors = datasets.read_rows(str(out), "errors")
    assert [(e["reason"], e["source"]) for e in errors] == [("bad_link", "")]
    st = stats.read_stats(str(out))
    assert st["outcomes"]["fetched"] == len(pages) and st["outcomes"]["links"] == len(links)
    assert not list((out / "_parts").glob("*")) and not list((out / "_staging").glob("*.parquet"))
    assert not list((out / "warc").glob(".tmp-*"))

    # Resume: only the transient failure is fetched again (and now succeeds); nothing else is asked for.
    hits_before = collections.Counter(web.hits)
    assert main(fetch_args(web, tmp_path / "links", out)) == 0
    rows2 = datasets.read_rows(str(out), "log")
    assert sorted(r["url"] for r in rows2) == sorted(links)
    by2 = {r["url"]: r for r in rows2}
    assert by2[flaky]["error"] is None and by2[flaky]["run"] == 2 and by2[flaky]["warc_file"]
    asked = collections.Counter(web.hits) - hits_before
    assert {path for (_, path) in asked} == {"/robots.txt", "/x/flaky/e2e"}
    for url in links:
        if url != flaky:
            assert by2[url] == by[url]  # kept as it was, WARC pointers included
    check_warc_records(out, rows2, web, pages)


def test_killed_run_resumes_with_every_link_once(tmp_path):
    from conftest import shared_path

    shared_path("web", "trafilatura-eval")
    with LoopbackWeb(latency=0.1, bombs=False) as web:
        urls = [web.url(f"kill{h}.test", web.page_path(h * 3 + i)) for h in range(14) for i in range(3)]
        write_links(tmp_path / "links", urls)
        out = tmp_path / "fetch"
        args = fetch_args(web, tmp_path / "links", out, "--hosts-per-group", "1", "--concurrency", "2")
        proc = subprocess.Popen([sys.executable, "-m", "webtext.cli", *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(list((out / "_parts").glob("*.parquet"))) < 4:
                time.sleep(0.05)
                assert proc.poll() is None, "the run ended before it could be killed"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        done_groups = len(list((out / "_parts").glob("*.parquet")))
        assert 4 <= done_groups < 14
        assert not (out / "_stats.json").exists()
        first_hits = collections.Counter(web.hits)

        assert main(args) == 0
        rows = datasets.read_rows(str(out), "log")
        assert sorted(r["url"] for r in rows) == sorted(urls)
        assert all(r["error"] is None for r in rows)
        kept = [r for r in rows if r["run"] == 1]
        assert len(kept) >= 3 * 4  # the finished groups of the killed run were not fetched again
        for r in kept:
            path = r["url"].split(str(web.port), 1)[1]
            assert web.hits[(r["host"], __import__("urllib.parse").parse.unquote(path))] == 1
        assert sum(first_hits.values()) < sum(web.hits.values())
        check_warc_records(out, rows)
        assert not list((out / "warc").glob(".tmp-*"))
        assert not list((out / "_parts").glob("*")) and not list((out / "_resume").glob("*"))


@pytest.mark.slow
def test_one_and_two_workers_log_the_same(web, tmp_path):
    urls = [web.url(f"det{h}.test", web.page_path(40 + h * 3 + i)) for h in range(6) for i in range(3)]
    urls += [web.url("det0.test", "/x/status/404"), web.url("det1.test", "/x/octet-binary")]
    write_links(tmp_path / "links", urls)
    logs = []
    for workers in ("1", "2"):
        out = tmp_path / f"fetch{workers}"
        args = fetch_args(web, tmp_path / "links", out, "--hosts-per-group", "2")
        args[args.index("--workers") + 1] = workers
        assert main(args) == 0
        cols = ["url", "key", "host", "status", "error", "bytes", "payload_digest", "charset", "charset_source",
                "warc_file"]
        logs.append(datasets.read_rows(str(out), "log", columns=cols))
        assert sorted(p.name for p in out.glob("log-*.parquet")) == ["log-00000-of-00001.parquet"]
    assert logs[0] == logs[1]


def test_retried_bundle_rewrites_the_same_files(web, tmp_path):
    """A Beam bundle retry runs a host group again: same WARC names, the last attempt's records, no leftovers."""
    from webtext.fetch.crawler import CrawlConfig, RedirectFilter
    from webtext.fetch.http import ClientConfig
    from webtext.fetch.task import fetch_group

    urls = [web.url(f"retry{h}.test", web.page_path(80 + h * 2 + i)) for h in range(3) for i in range(2)]
    links = write_links(tmp_path / "links", urls)
    config = CrawlConfig(client=ClientConfig(allow_networks=("127.0.0.1/32",), resolve=(("*.test", "127.0.0.1"),)),
                         host_delay=0.0, warc_max_bytes=60_000)
    out = tmp_path / "fetch"
    attempts = [fetch_group((3, [dict(link) for link in links]), config, str(out), 7, RedirectFilter())[0]
                for _ in range(2)]
    names = sorted(p.name for p in (out / "warc").iterdir())
    assert names and all(n.startswith("webtext-r0007-g00003-") for n in names)  # no .tmp-* left
    assert sorted({r["warc_file"] for r in attempts[1]}) == [f"warc/{n}" for n in names]
    check_warc_records(out, attempts[1], web, {u: 80 + i for i, u in enumerate(urls)})
    # the group's rows went to its part file, named like its WARC files
    assert [p.name for p in (out / "_parts").iterdir()] == ["webtext-r0007-g00003.parquet"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    """Every problem found before the run is one line naming the flag or input, exit status 2, nothing written."""
    assert main(["fetch", "--links", str(tmp_path / "none"), "--output", str(tmp_path / "out")]) == 2
    assert "no dataset 'links'" in capsys.readouterr().err
    write_links(tmp_path / "links", ["http://a.test/"])
    for flags, message in [(["--resolve", "nonsense"], "--resolve expects HOST=IP"),
                           (["--resolve", "a.test=b"], "--resolve 'a.test=b'"),
                           (["--allow-network", "10.0.0.0/33"], "--allow-network: '10.0.0.0/33'"),
                           (["--per-host", "0"], "--per-host must be at least 1"),
                           (["--concurrency", "0"], "--concurrency must be at least 1"),
                           (["--hosts-per-group", "0"], "--hosts-per-group must be at least 1")]:
        assert main(["fetch", "--links", str(tmp_path / "links"), "--output", str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"webtext fetch: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_plan_keeps_the_best_final_row_and_refetches_transient_ones():
    from webtext.fetch.resume import plan_link
    from webtext.runtime.stats import dict_counter

    link = {"url": "http://a.test/", "key": "http://a.test", "score": 9, "num_submissions": 2,
            "subreddits": ["x"], "first_created_utc": 5}
    ok = {"url": link["url"], "error": None, "transient": False, "run": 1, "fetched_at": "1", "score": 3}
    gone = {"url": link["url"], "error": "http_4xx", "transient": False, "run": 2, "fetched_at": "2"}
    busy = {"url": link["url"], "error": "http_5xx", "transient": True, "run": 3, "fetched_at": "3"}
    totals, count = dict_counter()
    # a success beats a later permanent failure and a later transient one; link metadata is refreshed
    [(action, row)] = plan_link([link], [busy, ok, gone], count)
    assert action == "keep" and row["run"] == 1 and row["score"] == 9 and row["subreddits"] == ["x"]
    assert plan_link([link], [busy, gone], count)[0][1]["run"] == 2
    assert plan_link([link], [busy], count) == [("fetch", link)]
    assert plan_link([link], [], count) == [("fetch", link)]
    assert plan_link([], [ok], count) == []
    assert (totals["resume_kept"], totals["resume_retried"], totals["stale_log_rows"]) == (2, 1, 1)


def test_host_groups_are_bounded_in_size_and_keep_every_local_process_busy():
    from webtext.fetch.pipeline import num_host_groups

    assert num_host_groups(0, 256) == 1 and num_host_groups(1, 256, processes=4) == 1
    assert num_host_groups(50, 256) == 1 and num_host_groups(50, 256, processes=2) == 2
    assert num_host_groups(3, 256, processes=8) == 3            # never a group without a host to give it
    assert num_host_groups(1000, 256, processes=2) == 4         # size bound first ...
    assert num_host_groups(1000, 10, processes=2) == 100
