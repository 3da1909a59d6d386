"""The polite crawler (one host group, no Beam) against the loopback web: politeness checked from the server's
own log, robots.txt, retries, redirects, WARC output, and bad endpoints that cost nothing else."""

from __future__ import annotations

import gzip
import time
import zlib

import pytest
from support_webserver import LoopbackWeb, Robots, loopback_only

from webtext.fetch.crawler import CrawlConfig, GroupCrawler, HostScheduler, RedirectFilter, WarcSink, backoff_seconds
from webtext.fetch.http import ClientConfig, HttpClient
from webtext.runtime import warc
from webtext.runtime.stats import dict_counter

ROBOTS = {
    "deny.test": Robots(200, "User-agent: *\nDisallow: /private\n"),
    "r5xx.test": Robots(503, "busy"),
    "r4xx.test": Robots(403, "no"),
    "slowbot.test": Robots(200, "User-agent: *\nCrawl-delay: 3600\n"),
    "mild.test": Robots(200, "User-agent: *\nCrawl-delay: 0.3\n"),
    "nowebtext.test": Robots(200, "User-agent: webtext\nDisallow: /\n\nUser-agent: *\nAllow: /\n"),
    "otherbot.test": Robots(200, "User-agent: otherbot\nDisallow: /\n"),
}


@pytest.fixture(scope="module")
def web():
    from conftest import shared_path

    shared_path("web", "trafilatura-eval")
    with LoopbackWeb(https=True, robots=ROBOTS, latency=0.02) as w:
        yield w


@pytest.fixture(autouse=True)
def _guard(monkeypatch):
    refused = loopback_only(monkeypatch)
    yield
    assert refused == []


def make_config(**kw) -> CrawlConfig:
    client = dict(allow_networks=("127.0.0.1/32",), resolve=(("*.test", "127.0.0.1"),), connect_timeout=1.0,
                  read_timeout=0.7, total_timeout=1.5, max_bytes=1 << 20)
    client.update(kw.pop("client", {}))
    base = dict(client=ClientConfig(**client), per_host=1, host_delay=0.0, concurrency=16, backoff=0.05,
                max_retry_after=1.0, max_crawl_delay=10.0)
    base.update(kw)
    return CrawlConfig(**base)


def crawl(urls, tmp_path=None, **kw):
    config = make_config(**kw)
    client = HttpClient(config.client)
    totals, count = dict_counter()
    links = [{"url": u, "key": u, "host": u.split("/")[2].split(":")[0], "score": 5, "num_submissions": 1,
              "subreddits": ["t"], "first_created_utc": 1} for u in urls]
    sink = WarcSink(str(tmp_path), "webtext-r0001-g00000", config.warc_max_bytes) if tmp_path else None
    rows = GroupCrawler(client, config, count, RedirectFilter()).crawl(links, sink)
    if sink:
        sink.commit()
    client.close()
    return {r["url"]: r for r in rows}, totals


def test_politeness_per_host_limit_and_delay(web):
    hosts = [f"polite{i}.test" for i in range(8)]
    urls = [web.url(h, web.page_path(i * 4 + j)) for i, h in enumerate(hosts) for j in range(4)]
    rows, _ = crawl(urls, host_delay=0.1)
    assert all(r["error"] is None for r in rows.values())
    for h in hosts:
        assert web.max_concurrent(h) == 1, h
        recs = sorted(web.requests_to(h), key=lambda r: r.start)
        assert [r.path for r in recs].count("/robots.txt") == 1 and recs[0].path == "/robots.txt"
        gaps = [b.start - a.answer for a, b in zip(recs, recs[1:], strict=False)]
        assert min(gaps) >= 0.1 - 0.005, gaps
        assert all(r.user_agent.startswith("webtext/") for r in recs)
    assert web.max_concurrent() >= 4  # many hosts at once


def test_per_host_limit_two_is_used_and_held(web):
    hosts = [f"two{i}.test" for i in range(3)]
    urls = [web.url(h, f"/x/drip?n=3&every=0.05&u={j}") for h in hosts for j in range(6)]
    rows, _ = crawl(urls, per_host=2)
    assert all(r["error"] is None for r in rows.values())
    assert {h: web.max_concurrent(h) for h in hosts} == {h: 2 for h in hosts}


def test_robots(web):
    u = web.url
    rows, totals = crawl([u("deny.test", "/private/a"), u("deny.test", "/x/ok"), u("r5xx.test", "/x/ok"),
                          u("r5xx.test", "/x/ok?b"), u("r4xx.test", "/x/ok"), u("nowebtext.test", "/x/ok"),
                          u("otherbot.test", "/x/ok")])
    err = {url.split("/", 3)[2].split(":")[0] + "/" + url.split("/", 3)[3]: (r["error"], r["transient"])
           for url, r in rows.items()}
    assert err == {"deny.test/private/a": ("robots", False), "deny.test/x/ok": (None, False),
                   "r5xx.test/x/ok": ("robots", True), "r5xx.test/x/ok?b": ("robots", True),
                   "r4xx.test/x/ok": (None, False), "nowebtext.test/x/ok": ("robots", False),
                   "otherbot.test/x/ok": (None, False)}
    assert [r.path for r in web.requests_to("r5xx.test")] == ["/robots.txt"]  # nothing else was asked
    assert web.requests_to("deny.test", "/private/a") == []
    assert totals["robots_fetched"] == 5


def test_crawl_delay_honoured_or_host_skipped(web):
    rows, _ = crawl([web.url("slowbot.test", "/x/ok"), web.url("slowbot.test", "/x/ok?2"),
                     web.url("mild.test", "/x/ok"), web.url("mild.test", "/x/ok?2"), web.url("mild.test", "/x/ok?3")])
    assert {r["error"] for u, r in rows.items() if "slowbot" in u} == {"crawl_delay"}
    assert [r.path for r in web.requests_to("slowbot.test")] == ["/robots.txt"]
    recs = sorted(web.requests_to("mild.test"), key=lambda r: r.start)
    assert len(recs) == 4 and all(r["error"] is None for u, r in rows.items() if "mild" in u)
    assert min(b.start - a.answer for a, b in zip(recs, recs[1:], strict=False)) >= 0.3 - 0.005


def test_retries(web):
    u = web.url
    t0 = time.monotonic()
    rows, totals = crawl([u("retry1.test", "/x/flaky/a?fail=1&status=503"),
                          u("retry2.test", "/x/flaky/b?fail=9&status=500"),
                          u("retry3.test", "/x/flaky/c?fail=1&status=429&retry_after=0.4"),
                          u("retry4.test", "/x/flaky/d?fail=1&status=503&retry_after=3600"),
                          u("retry5.test", "/x/status/404"), u("retry6.test", "/x/status/501")])
    took = time.monotonic() - t0
    by = {u.split("/")[2].split(".")[0]: r for u, r in rows.items()}
    assert (by["retry1"]["error"], by["retry1"]["attempts"]) == (None, 2)
    assert (by["retry2"]["error"], by["retry2"]["attempts"], by["retry2"]["transient"]) == ("http_5xx", 3, True)
    assert (by["retry3"]["error"], by["retry3"]["attempts"]) == (None, 2)
    recs = sorted(web.requests_to("retry3.test", "/x/flaky/c"), key=lambda r: r.start)
    assert recs[1].start - recs[0].answer >= 0.4 - 0.005  # Retry-After honoured
    # a Retry-After above the cap is not waited for: the next run retries
    assert (by["retry4"]["error"], by["retry4"]["attempts"], by["retry4"]["transient"]) == ("http_5xx", 1, True)
    assert "Retry-After" in by["retry4"]["error_detail"]
    assert by["retry5"]["attempts"] == 1 and by["retry6"]["attempts"] == 1
    assert took < 3.0  # nothing parked a thread for the hour it was asked to wait
    assert totals["retries"] == 4


def test_redirects_each_hop_checked(web):
    u = web.url
    rows, _ = crawl([u("redir.test", "/x/chain/3"), u("redir2.test", "/x/chain/6"), u("redir3.test", "/x/loop-a"),
                     u("redir4.test", "/x/redirect?to=" + u("deny.test", "/private/b")),
                     u("redir5.test", "/x/redirect?to=" + u("files.test", "/report.pdf")),
                     u("redir6.test", "/x/redirect?to=ftp://files.test/a"),
                     u("redir7.test", "/x/redirect?status=308&to=" + u("host1.test", web.page_path(1)))])
    by = {u.split("/")[2].split(".")[0]: r for u, r in rows.items()}
    assert by["redir"]["error"] is None and by["redir"]["redirects"] == 3
    assert by["redir"]["final_url"].endswith("/x/chain/0")
    assert by["redir2"]["error"] == "redirects"
    assert by["redir3"]["error"] == "redirects" and "loop" in by["redir3"]["error_detail"]
    assert by["redir4"]["error"] == "robots"
    assert web.requests_to("deny.test", "/private/b") == []
    assert by["redir5"]["error"] == "filtered" and ".pdf" in by["redir5"]["error_detail"]
    assert web.requests_to("files.test", "/report.pdf") == []
    assert by["redir6"]["error"] == "filtered"
    assert by["redir7"]["error"] is None and "host1.test" in by["redir7"]["final_url"]


def test_bad_endpoints_lose_nothing_else_and_pages_land_in_warc(web, tmp_path):
    bad = {"/x/drip?every=0.1&n=100": "timeout", "/x/hang?s=3": "timeout", "/x/status/500": "http_5xx",
           "/x/status/503?retry_after=0": "http_5xx", "/x/status/429": "http_4xx", "/x/huge": "too_large",
           "/x/gzip-bomb": "too_large", "/x/cl-short": "reset", "/x/reset": "reset", "/x/pdf": "content_type",
           "/x/png-as-html": "content_type", "/x/loop-a": "redirects"}
    urls, expect = [], {}
    for i, (path, error) in enumerate(bad.items()):
        for host in (f"mixed{i}.test", f"mixed{i + 20}.test"):
            good = web.url(host, web.page_path(i))
            badu = web.url(host, path)
            urls += [badu, good]
            expect[badu], expect[good] = error, None
    urls.append(web.url("secure.test", "/x/ok", tls=True))
    expect[urls[-1]] = "tls"
    rows, _ = crawl(urls, tmp_path, backoff=0.01, retries=1)
    assert len(rows) == len(urls)
    assert {u: r["error"] for u, r in rows.items()} == expect
    files = sorted(p.name for p in (tmp_path / "warc").iterdir())
    assert files == ["webtext-r0001-g00000-00000.warc.gz"]  # no temporary file left
    stored = [r for r in rows.values() if r["warc_file"]]
    assert len(stored) == sum(v is None for v in expect.values())
    for r in stored:
        with open(tmp_path / r["warc_file"], "rb") as f:
            f.seek(r["warc_offset"])
            rec = warc.read_response_at(f, r["warc_file"])
        index = [i for i in range(len(bad)) if r["url"].endswith(web.page_path(i))][0]
        assert rec.url == r["final_url"] and rec.body == web.page_bytes(index) and r["bytes"] == len(rec.body)
        assert warc.payload_digest(rec.body) == r["payload_digest"] and rec.status == 200
        assert rec.ip == "127.0.0.1"
    # every record of the file is referenced exactly once
    with open(tmp_path / "warc" / files[0], "rb") as f:
        offsets = [rec.offset for rec in warc.iter_responses(f, files[0])]
    assert sorted(offsets) == sorted(r["warc_offset"] for r in stored)


def test_warc_files_roll_by_size(web, tmp_path):
    urls = [web.url("roll.test", web.page_path(i)) for i in range(8)]
    rows, _ = crawl(urls, tmp_path, warc_max_bytes=50_000)
    names = sorted({r["warc_file"] for r in rows.values()})
    assert len(names) >= 3 and names[0] == "warc/webtext-r0001-g00000-00000.warc.gz"
    assert names == [f"warc/webtext-r0001-g00000-{i:05d}.warc.gz" for i in range(len(names))]
    n = 0
    for name in names:
        with open(tmp_path / name, "rb") as f:
            n += sum(1 for _ in warc.iter_responses(f, name))
    assert n == len(urls)


# ---------------------------------------------------------------------------------------------------------
# pure parts

def test_each_warc_record_is_its_own_gzip_member_that_any_gzip_reader_opens():
    body = b"<html><body>" + "caf\u00e9 ".encode() * 2000 + b"</body></html>"
    sizes = []
    for level in warc.GZIP_LEVELS:
        enc = warc.encode_exchange("http://a.test/p?q=1", request_headers=[("Host", "a.test")], status=200,
                                   reason="OK", response_headers=[("Content-Type", "text/html"),
                                                                  ("Content-Encoding", "gzip")],
                                   body=body, ip="127.0.0.1", date="2026-01-01T00:00:00Z", level=level)
        request, response = enc.data[:enc.response_start], enc.data[enc.response_start:]
        for member, kind in ((request, b"request"), (response, b"response")):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the standard library's zlib, not the writer's
            raw = d.decompress(member)
            assert d.eof and d.unused_data == b""  # exactly one whole member
            assert raw.startswith(b"WARC/1.0\r\n") and b"WARC-Type: " + kind in raw
        assert gzip.decompress(response).endswith(body + b"\r\n\r\n")
        assert enc.digest == warc.payload_digest(body)
        sizes.append(len(response))
    assert sizes[-1] < sizes[0] < len(body)  # level 3 compresses most, level 0 still compresses



def test_scheduler_orders_by_readiness_and_holds_the_limit():
    clock = [0.0]
    links = [{"host": h, "url": f"{h}/{i}"} for h in ("a", "b") for i in range(3)]
    s = HostScheduler(links, per_host=1, delay=10.0, clock=lambda: clock[0])
    h1, t1 = s.take()
    h2, t2 = s.take()
    assert {h1.name, h2.name} == {"a", "b"}
    s.finish(h1)
    s.finish(h2, requeue=t2, contacted=False)  # b's task back at the head, b not contacted: no delay
    h3, t3 = s.take()
    assert (h3.name, t3) == ("b", t2)
    assert s._heap[0][0] == 10.0  # a waits for its delay
    clock[0] = 10.0
    h4, _ = s.take()
    assert h4.name == "a"


def test_backoff_grows_with_jitter():
    import random

    rng = random.Random(1)
    waits = [backoff_seconds(a, 2.0, rng) for a in (1, 2, 3)]
    assert 1.0 <= waits[0] <= 2.0 and 2.0 <= waits[1] <= 4.0 and 4.0 <= waits[2] <= 8.0


def test_robots_parse():
    from webtext.fetch.crawler import parse_robots

    r = parse_robots("User-agent: *\nDisallow: /a\nCrawl-delay: 4\nRequest-rate: 1/10s\n", "webtext")
    assert r.denies("http://x.test/a/b", "webtext") and not r.denies("http://x.test/b", "webtext")
    assert r.crawl_delay == 10.0
