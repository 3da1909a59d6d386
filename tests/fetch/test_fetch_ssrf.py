"""The SSRF guard: links and redirects to loopback, private, link-local and unspecified addresses are refused.

These tests send requests toward 169.254.169.254 and 10.0.0.1 if the guard is broken, so they run inside a
loopback-only network namespace (`unshare -n`): `test_in_loopback_only_namespace` re-runs this file there.
A socket guard (support_webserver.loopback_only) is on as well, and is the only protection where the
namespace is unavailable (not root): then the inner tests run directly, minus the one that needs the
namespace to answer a connect to 10.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support_webserver import LoopbackWeb, loopback_only

from webtext.fetch.crawler import CrawlConfig, GroupCrawler
from webtext.fetch.http import ClientConfig, HttpClient
from webtext.runtime.stats import dict_counter

INNER = "WEBTEXT_NETNS_INNER"
REPO = Path(__file__).resolve().parents[2]
SERVER = "127.0.0.2"  # the test web's address: `localhost` (127.0.0.1, ::1) is then a different, blocked one


def _namespace_available() -> bool:
    if not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


NETNS = os.environ.get(INNER) == "1"
inner = pytest.mark.skipif(not NETNS and _namespace_available(),
                           reason="runs inside the network namespace (test_in_loopback_only_namespace)")


@pytest.mark.netns
def test_in_loopback_only_namespace():
    if NETNS:
        pytest.skip("already inside")
    if not _namespace_available():
        pytest.skip("unshare -n unavailable (not root?): the inner tests run directly, behind the socket guard")
    script = (f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider "
              f"{Path(__file__).relative_to(REPO)}")
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, INNER: "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " skipped" in proc.stdout  # the inner run skipped only this test


@pytest.fixture(scope="module")
def web():
    from conftest import shared_path

    shared_path("web", "trafilatura-eval")
    with LoopbackWeb(addresses=(SERVER, "127.0.0.1"), bombs=False) as w:
        yield w


def crawl(urls, allow, resolve=(("*.test", SERVER),)):
    config = CrawlConfig(client=ClientConfig(allow_networks=tuple(allow), resolve=tuple(resolve),
                                             connect_timeout=0.5, read_timeout=0.5, total_timeout=1.0),
                         host_delay=0.0, retries=0, concurrency=8)
    client = HttpClient(config.client)
    _, count = dict_counter()
    links = [{"url": u, "key": u, "host": u.split("/")[2].rsplit(":", 1)[0]} for u in urls]
    rows = GroupCrawler(client, config, count).crawl(links, None)
    client.close()
    return {r["url"]: r for r in rows}


TARGETS = ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://localhost:{port}/x/ok",
           "http://[::1]:{port}/x/ok", "http://0.0.0.0:{port}/x/ok", "http://[::ffff:169.254.169.254]/",
           "http://[::ffff:127.0.0.1]:{port}/x/ok", "http://2130706433:{port}/x/ok", "http://127.1:{port}/x/ok"]


@inner
def test_redirects_to_blocked_addresses(web, monkeypatch):
    refused = loopback_only(monkeypatch)
    urls = {t: web.url(f"r{i}.test", "/x/redirect?to=" + t.format(port=web.port)) for i, t in enumerate(TARGETS)}
    good = web.url("fine.test", "/x/ok")
    rows = crawl(list(urls.values()) + [good], allow=[f"{SERVER}/32"])
    for target, url in urls.items():
        assert (rows[url]["error"], rows[url]["transient"]) == ("blocked_address", False), (target, rows[url])
        assert rows[url]["redirects"] == 1
    assert rows[good]["error"] is None  # the guard costs the good link nothing
    # nothing reached the server under another name or address
    assert {r.path for r in web.log} <= {"/robots.txt", "/x/redirect", "/x/ok"}
    assert len(web.requests_to("fine.test", "/x/ok")) == 1
    assert [r for r in web.log if r.host in ("localhost", "0.0.0.0", "[::1]")] == []
    assert refused == []


@inner
def test_links_to_blocked_addresses_and_rebinding_names(web, monkeypatch):
    refused = loopback_only(monkeypatch)
    links = [t.format(port=web.port) for t in TARGETS] + ["http://metadata.test/", "http://intranet.test/"]
    resolve = [("metadata.test", "169.254.169.254"), ("intranet.test", "10.1.2.3")]
    rows = crawl(links, allow=[f"{SERVER}/32"], resolve=resolve)
    assert {u: r["error"] for u, r in rows.items()} == {u: "blocked_address" for u in links}
    assert all(r["final_url"] is None and r["ip"] is None for r in rows.values())
    assert refused == []


@inner
def test_allow_network_opens_loopback_on_purpose(web, monkeypatch):
    loopback_only(monkeypatch)
    url = web.url("r.test", "/x/redirect?to=" + f"http://localhost:{web.port}/x/ok")
    rows = crawl([url], allow=["127.0.0.0/8"])
    assert rows[url]["error"] is None and rows[url]["final_url"] == f"http://localhost:{web.port}/x/ok"
    assert rows[url]["ip"] == "127.0.0.1"


@pytest.mark.skipif(not NETNS, reason="needs the loopback-only namespace to answer a connect to 10.0.0.1")
def test_allow_network_private_range_then_no_route():
    url = "http://10.0.0.1:9/"
    rows = crawl([url], allow=["10.0.0.0/8"])
    assert rows[url]["error"] in ("connect", "timeout")  # tried (allowed), and the namespace has no route
