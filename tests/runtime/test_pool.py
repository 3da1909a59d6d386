"""The local process pool that stages use for their heavy steps (real child processes)."""

import os

import pytest

from webtext.runtime import pool


def square_and_pid(task, offset):
    return task * task + offset, os.getpid()


def warm(_task, marker):
    os.environ["WEBTEXT_TEST_WARM"] = marker


def fail_on_three(task):
    if task == 3:
        raise ValueError("three is bad")
    return task


def die_on_two(task):
    if task == 2:
        os._exit(9)
    return task


def test_tasks_run_in_child_processes_and_every_result_comes_back():
    with pool.TaskPool(2) as tp:
        results = []
        for task in range(10):
            results += tp.submit(square_and_pid, task, 1)
        results += tp.drain()
    assert sorted(r for r, _ in results) == [t * t + 1 for t in range(10)]
    pids = {p for _, p in results}
    assert os.getpid() not in pids and len(pids) == 2


def test_one_process_runs_inline():
    with pool.TaskPool(1) as tp:
        assert tp.submit(square_and_pid, 3, 0) == [(9, os.getpid())]
        assert tp.drain() == []


def test_a_lone_task_runs_inline_without_starting_a_process():
    with pool.TaskPool(2) as tp:
        assert tp.submit(square_and_pid, 4, 0) == []
        assert tp.drain() == [(16, os.getpid())]


@pytest.mark.parametrize("fn, message", [(fail_on_three, "three is bad"),   # the child's traceback
                                         (die_on_two, "died")])               # an error, not a hang
def test_a_failing_task_or_a_dying_child_stops_the_pool(fn, message):
    with pool.TaskPool(2) as tp:
        with pytest.raises(pool.TaskError, match=message):
            for task in range(6):
                tp.submit(fn, task)
            tp.drain()


def test_children_are_reused_by_the_next_pool_and_prestarted_ones_warm_up():
    pool.prestart(2, warm, "yes")
    idle = {c.proc.pid for c in pool._IDLE}
    assert len(idle) >= 2
    for _ in range(2):
        with pool.TaskPool(2) as tp:
            results = tp.submit(square_and_pid, 1, 0) + tp.submit(square_and_pid, 2, 0)
            results += tp.submit(square_and_pid, 3, 0) + tp.drain()
        assert sorted(r for r, _ in results) == [1, 4, 9]   # warm-up answers never reach the results
        assert {p for _, p in results} <= idle                # no new interpreter was started


def tick_in_child(n, stage):
    from webtext.runtime import progress

    progress.tick(stage, n)
    progress.flush()
    return os.getpid()


def test_every_progress_run_counts_from_zero_here_and_in_reused_children():
    from webtext.runtime import progress

    pool.prestart(2)  # children started before any progress run: they are reused by both runs below
    before = {c.proc.pid for c in pool._IDLE}
    for _ in range(2):  # two runs of one stage in one process
        with progress.Progress("stagex", total=7):
            directory = os.environ[progress.ENV]
            progress.tick("stagex", 3)
            progress.flush()
            with pool.TaskPool(2) as p:
                pids = p.submit(tick_in_child, 2, "stagex") + p.submit(tick_in_child, 2, "stagex") + p.drain()
            assert set(pids) <= before and os.getpid() not in pids
            assert progress._total(directory, "stagex") == 7  # not the first run's counts, none lost


def test_shutdown_reaps_every_idle_child_and_exit_only_tells_them_to_go():
    pool.prestart(2)
    children = list(pool._IDLE)
    pool._at_exit()  # what runs at exit: no waiting for the interpreters to wind down
    assert not pool._IDLE
    for child in children:  # each goes on its own
        assert child.proc.wait(timeout=30) == 0
        child.close()
    pool.prestart(2)
    children = list(pool._IDLE)
    pool.shutdown()
    assert not pool._IDLE and all(c.proc.poll() == 0 for c in children)  # reaped before it returned


def test_the_stages_local_processes_run_their_real_tasks_without_importing_beam(tmp_path):
    """Links' dump files, fetch's host groups, dedup's row groups (sketches, payloads, rows kept) and the
    merge of sorted runs run in local processes that never import Beam: each would spend ~0.6 s of CPU on
    it, twice per build. The children run the real task functions with real arguments, then are asked
    what they imported."""
    import pyarrow as pa

    from webtext.fetch import crawler
    from webtext.runtime import datasets
    from webtext.dedup import rows as dedup_rows, minhash
    from webtext.links import submissions
    from webtext.demo.dump import sample_lines, write_lines

    pool.shutdown()  # fresh children: an earlier test's may have imported anything
    rows = [{"doc_id": f"d{i}", "url": f"https://example.com/{i}", "score": i,
             "text": f"document number {i} says the same few words again and again"} for i in range(40)]
    schema = pa.schema([("doc_id", pa.string()), ("url", pa.string()), ("score", pa.int64()), ("text", pa.string())])
    docs = tmp_path / "documents-00000-of-00001.parquet"
    docs.write_bytes(datasets.table_bytes(rows, schema))
    hasher, lsh = minhash.MinHasher(), (16, 8)
    ids = frozenset(r["doc_id"] for r in rows)
    dumps = [str(tmp_path / "RS_a.zst"), str(tmp_path / "RS_b.zst")]
    for path in dumps:
        write_lines(path, sample_lines(200))
    with pool.TaskPool(2) as tp:
        kept = []
        for fn, tasks, args in [
            (submissions.links_of_file, dumps, (submissions.LinkRules(),)),
            (crawler.fetch_group, [(0, []), (1, [])], (crawler.CrawlConfig(), str(tmp_path / "fetch"), 1,
                                                       crawler.RedirectFilter())),
            (dedup_rows.sketch_row_group, [(str(docs), 0)] * 2, (5, hasher, lsh)),
            (dedup_rows.payload_row_group, [(str(docs), 0)] * 2, (5, "exact", hasher, ids)),
            (dedup_rows.keep_row_group, [(str(docs), 0)] * 2, (schema, str(tmp_path / "runs"), {}, 2)),
        ]:
            done = [r for task in tasks for r in tp.submit(fn, task, *args)]  # one task each child
            done += tp.drain()
            assert len(done) == 2
            if fn is dedup_rows.keep_row_group:
                kept = done[0][0]
        out = str(tmp_path / "out")
        merged = [r for index in (0, 1)  # the merge of sorted runs into a shard, as WriteRuns has it done
                  for r in tp.submit(datasets.write_shard_from_runs, (index, [p for i, p in kept if i == index]),
                                     out, "documents", schema, "doc_id", 2)]
        assert len(merged + tp.drain()) == 2
        probe = "sorted(m for m in __import__('sys').modules if m.split('.')[0] == 'apache_beam')"
        loaded = [r for _ in range(2) for r in tp.submit(eval, probe)]
        loaded += tp.drain()
    assert loaded == [[], []]
    assert (tmp_path / "fetch" / crawler.PARTS_DIR / "webtext-r0001-g00001.parquet").exists()
    assert sorted(r["doc_id"] for r in datasets.read_rows(out, "documents")) == sorted(ids)


def shout(task):
    print(f"stray print {task}")  # a task's print goes to the child's stderr, never into the answers
    return task


def test_a_tasks_prints_reach_stderr_even_as_the_child_exits_at_once(capfd, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the children's stdout is then block-buffered
    pool.shutdown()
    with pool.TaskPool(2) as tp:
        results = tp.submit(shout, 1) + tp.submit(shout, 2) + tp.drain()
    pool.shutdown()  # the children exit without their interpreter's teardown: their buffers are flushed first
    assert sorted(results) == [1, 2]
    err = capfd.readouterr().err
    assert "stray print 1" in err and "stray print 2" in err
