"""The extractor sandbox: real trafilatura in real child processes, fed real and hostile pages."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from support_extract import eval_pages, slow_page
from support_processes import child_pids

from webtext.extract import sandbox
from webtext.extract.sandbox import ExtractorPool, ExtractSettings, SandboxConfig, extract_in_process
from webtext.runtime.stats import dict_counter

ARTICLE = ("<html><head><title>Harbour notes</title></head><body><article><h1>Harbour notes</h1>"
           + "".join(f"<p>Paragraph {i}: the ferry left the harbour at dawn while gulls circled the old "
                     f"lighthouse, and the fishermen mended their nets on the quay.</p>" for i in range(12))
           + "</article></body></html>")


def hostile_pages() -> dict[str, str]:
    huge = ARTICLE.replace("</body>", "<script>var data = '" + "A" * 50_000_000 + "';</script></body>")
    return {
        "deep": "<html><body>" + "<div>" * 100_000 + "deep text " * 50 + "</div>" * 100_000 + "</body></html>",
        "huge": huge,
        "garbage": os.urandom(200_000).decode("latin-1"),
        "empty": "",
        "blank": " \n\t \r\n   ",
        "slow": slow_page(),
    }


def real_pages(n: int) -> list[tuple[str, str, str]]:
    """The n smallest real pages of an evenly spread sample: quick to extract under a short deadline."""
    pages = sorted(eval_pages(60), key=lambda p: len(p["body"]))[:n]
    return [(p["url"], p["body"].decode("utf-8", "replace"), p["url"]) for p in pages]


def test_hostile_pages_are_counted_by_reason_and_the_rest_extracted():
    real = real_pages(6)
    hostile = hostile_pages()
    tasks = [(f"hostile:{name}", html, None) for name, html in hostile.items()]
    # Hostile pages interleaved with real ones, so real pages run on children that replaced killed ones.
    mixed = [t for pair in zip(real, tasks) for t in pair]
    totals, count = dict_counter()
    config = SandboxConfig(processes=2, timeout_s=1.5, max_html_chars=2_000_000)
    with ExtractorPool(config, count) as pool:
        outcomes = {o.task_id: o for o in pool.extract_all(mixed)}

    assert set(outcomes) == {t[0] for t in mixed}
    reasons = {k[len("hostile:"):]: o.reason for k, o in outcomes.items() if k.startswith("hostile:")}
    assert reasons == {"deep": "empty", "huge": "ok", "garbage": "empty", "empty": "empty", "blank": "empty",
                       "slow": "timeout"}
    assert "Harbour notes" in outcomes["hostile:huge"].title
    assert "the ferry left the harbour" in outcomes["hostile:huge"].text
    assert outcomes["hostile:huge"].truncated and totals["html_truncated"] == 1
    assert "killed" in outcomes["hostile:slow"].detail
    for url, _, _ in real:
        assert outcomes[url].reason == "ok", (url, outcomes[url].detail)
        assert len(outcomes[url].text) > 200
    assert totals["children_replaced"] == 1           # the timed-out child
    assert totals["children_started"] == 2 + 1


def assert_as_extracted_here(outcomes: dict, tasks: list[tuple[str, str, str]]) -> None:
    """Every (task_id, html, url) task's outcome has the reason, text, title and date that trafilatura gives
    for that page in this process, where no metadata is skipped and nothing is reused."""
    assert set(outcomes) == {task_id for task_id, _, _ in tasks}
    kwargs = ExtractSettings().kwargs()
    for task_id, html, url in tasks:
        reason, payload = extract_in_process(html, url, kwargs)
        got = outcomes[task_id]
        assert got.reason == reason, task_id
        if reason == "ok":
            assert (got.text, got.title, got.date) == (payload["text"], payload["title"], payload["date"]), task_id


def test_children_skip_only_metadata_that_is_not_kept():
    """The children skip trafilatura's author, category, tag and license search; every kept field of every
    page must equal what trafilatura gives in this process, where nothing is skipped."""
    import trafilatura
    import trafilatura.metadata

    assert all(getattr(trafilatura.metadata, name) is not skip for name, skip in sandbox.UNKEPT_METADATA.items())
    pages = [(p["url"], p["body"].decode("utf-8", "replace"), p["url"]) for p in eval_pages(60)]
    kwargs = ExtractSettings().kwargs()
    with ExtractorPool(SandboxConfig(processes=2, timeout_s=30)) as pool:
        outcomes = {o.task_id: o for o in pool.extract_all(pages)}
    assert_as_extracted_here(outcomes, pages)
    # The sample holds pages where the skipped search finds something, so the comparison covers it.
    found = [trafilatura.bare_extraction(html, url=url, **kwargs) for url, html, _ in pages]
    assert sum(1 for d in found if d and d.author) >= 5
    assert sum(1 for d in found if d and (d.categories or d.tags)) >= 3


def test_pages_with_the_same_html_share_its_text_and_keep_their_own_metadata():
    """The same page under a second URL is not extracted again, yet every outcome is what extracting it
    would give: its text, and title and date for its own URL (a date in the URL counts)."""
    pages = real_pages(12)
    twins = [(f"http://mirror.example/2016/05/07/story-{i}.html", html) for i, (_, html, _) in enumerate(pages)]
    # Half the twins right behind their page (still in flight), half after every page (long finished).
    tasks = []
    for i, (url, html, _) in enumerate(pages):
        tasks.append((url, html, url))
        if i % 2 == 0:
            tasks.append((twins[i][0], twins[i][1], twins[i][0]))
    tasks += [(url, html, url) for i, (url, html) in enumerate(twins) if i % 2 == 1]
    totals, count = dict_counter()
    with ExtractorPool(SandboxConfig(processes=2, timeout_s=30), count) as pool:
        outcomes = {o.task_id: o for o in pool.extract_all(tasks)}
    assert_as_extracted_here(outcomes, tasks)
    assert all(o.reason == "ok" for o in outcomes.values())
    assert totals["pages_reused"] == len(twins)
    # Some pages take their date from the URL they are asked for, so the twins' metadata was worked out.
    assert any(outcomes[twin].date == "2016-05-07" != outcomes[url].date
               for (url, _, _), (twin, _) in zip(pages, twins))


def test_a_twin_shares_a_failure_the_html_decides_and_retries_one_the_moment_may_have_caused():
    garbage = hostile_pages()["garbage"]
    tasks = [("garbage", garbage, None), ("garbage twin", garbage, "http://x.example/"),
             ("slow", slow_page(), None), ("slow twin", slow_page(), "http://y.example/")]
    totals, count = dict_counter()
    with ExtractorPool(SandboxConfig(processes=2, timeout_s=1.5), count) as pool:
        reasons = {o.task_id: o.reason for o in pool.extract_all(tasks)}
    assert reasons == {"garbage": "empty", "garbage twin": "empty", "slow": "timeout", "slow twin": "timeout"}
    assert totals["pages_reused"] == 1        # the garbage twin
    assert totals["children_replaced"] == 2   # each slow page was tried, and timed out, itself


def test_skipping_metadata_fails_loudly_when_trafilatura_renames_a_helper(monkeypatch):
    import trafilatura.metadata

    sandbox.check_unkept_metadata()  # this trafilatura has them all
    monkeypatch.delattr(trafilatura.metadata, "extract_license")
    with pytest.raises(RuntimeError, match="no metadata.extract_license"):
        sandbox.check_unkept_metadata()  # what the stage calls before its pipeline runs
    with pytest.raises(RuntimeError, match="no metadata.extract_license"):
        sandbox.skip_unkept_metadata()   # what each child does


def test_the_extract_stage_stops_at_start_up_when_trafilatura_renamed_a_helper(monkeypatch, tmp_path, capsys):
    """Before its pipeline is built or any child starts: one clear error, not a failure on every page."""
    import argparse

    import trafilatura.metadata

    from webtext.extract import command

    monkeypatch.delattr(trafilatura.metadata, "extract_author")
    built = []
    monkeypatch.setattr(command, "build_pipeline", lambda *a, **k: built.append(a))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    (tmp_path / "a.warc.gz").write_bytes(b"")   # never read: the stage stops before
    earlier = tmp_path / "out" / "documents-00000-of-00001.parquet"
    earlier.parent.mkdir()
    earlier.write_bytes(b"an earlier run's output")
    args = parser.parse_args(["--warc", str(tmp_path / "*.warc.gz"), "--output", str(tmp_path / "out")])
    assert command.main(args) == 2
    err = capsys.readouterr().err
    assert "webtext extract: error: " in err and "no metadata.extract_author" in err
    assert not built
    assert earlier.read_bytes() == b"an earlier run's output"  # nothing of the earlier run removed


def test_a_child_that_dies_mid_page_is_a_crash_and_is_replaced():
    slow = slow_page()
    totals, count = dict_counter()
    with ExtractorPool(SandboxConfig(processes=1, timeout_s=60), count) as pool:
        pool.start()
        assert not pool.submit("slow", slow)
        victim = pool.pids()[0]
        # What a segfault in lxml looks like from outside: the child dies of SIGSEGV while on a page.
        threading.Timer(0.5, os.kill, (victim, signal.SIGSEGV)).start()
        crashed = pool.drain()
        after = list(pool.extract_all([("article", ARTICLE, None)]))
        assert pool.pids() != [victim]
    assert [(o.task_id, o.reason) for o in crashed] == [("slow", "crash")]
    assert "SIGSEGV" in crashed[0].detail
    assert [(o.task_id, o.reason) for o in after] == [("article", "ok")]
    assert totals["children_replaced"] == 1


def test_children_are_recycled_every_n_pages():
    real = real_pages(7)
    totals, count = dict_counter()
    with ExtractorPool(SandboxConfig(processes=1, recycle_after=3), count) as pool:
        first = pool.pids()
        outcomes = list(pool.extract_all(real))
        assert pool.pids() != first
    assert sorted(o.task_id for o in outcomes) == sorted(t[0] for t in real)
    assert all(o.reason == "ok" for o in outcomes)
    assert totals["children_recycled"] == 2
    assert totals["children_started"] == 3


def test_a_child_over_its_memory_limit_reports_memory_and_is_replaced():
    # A child idles at ~170 MB of address space; parsing ~2 MB of tiny elements needs far more than 250 MB.
    bloat = "<html><body>" + "<p><b>x</b></p>" * 140_000 + "</body></html>"
    totals, count = dict_counter()
    with ExtractorPool(SandboxConfig(processes=1, memory_mb=250, timeout_s=60), count) as pool:
        outcomes = list(pool.extract_all([("bloat", bloat, None), ("article", ARTICLE, None)]))
    got = {o.task_id: o.reason for o in outcomes}
    assert got["bloat"] in ("memory", "crash"), outcomes  # MemoryError, or the allocator aborting
    assert got["article"] == "ok"
    assert totals["children_replaced"] == 1


def test_a_page_never_waits_on_a_busy_child():
    """With two children, a page that hangs one child does not hold up the pages behind it."""
    slow = slow_page()
    real = real_pages(4)
    with ExtractorPool(SandboxConfig(processes=2, timeout_s=3)) as pool:
        start = time.monotonic()
        done_at = {}
        for o in pool.extract_all([("slow", slow, None)] + real):
            done_at[o.task_id] = time.monotonic() - start
    assert max(done_at[u] for u, _, _ in real) < done_at["slow"]


@pytest.mark.parametrize("bad", [{"processes": 0}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        ExtractorPool(SandboxConfig(**bad))


def test_closing_returns_at_once_and_leaves_no_child_behind():
    before = child_pids()
    with ExtractorPool(SandboxConfig(processes=2, recycle_after=1)) as pool:
        pages = [("article", ARTICLE, None), ("other", ARTICLE.replace("Harbour", "River"), None)]
        assert sorted(o.reason for o in pool.extract_all(pages)) == ["ok", "ok"]
        pids = pool.pids()  # two ready and idle, the recycled ones possibly still winding down
        assert len(pids) == 2 and set(pids) <= child_pids()
        start = time.monotonic()
    assert time.monotonic() - start < 0.5   # idle children only have to read "go" and leave
    assert child_pids() <= before           # every child reaped: not even a zombie left
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_two_pools_have_children_of_their_own():
    before = child_pids()
    with ExtractorPool(SandboxConfig(processes=1)) as first, ExtractorPool(SandboxConfig(processes=1)) as second:
        assert not set(first.pids()) & set(second.pids())
        first.close()   # closing one leaves the other working
        assert [o.reason for o in second.extract_all([("article", ARTICLE, None)])] == ["ok"]
    assert child_pids() <= before


UNGUARDED_SCRIPT = """
import sys
sys.path[:0] = {paths!r}
print("script body ran")
from webtext.extract.sandbox import ExtractorPool, SandboxConfig
with ExtractorPool(SandboxConfig(processes=2)) as pool:
    print(sorted(o.reason for o in pool.extract_all([("a", {page!r}, None), ("b", {page!r}, None)])))
"""


def test_children_never_run_the_callers_script_again(tmp_path):
    import subprocess
    import sys

    # A script without an `if __name__ == "__main__"` guard: multiprocessing would run it again in each child.
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT.format(paths=sys.path, page=ARTICLE))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["script body ran", "['ok', 'ok']"]
