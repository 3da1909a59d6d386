"""Child processes owned by their pool, and the task pool that stages use for their heavy steps (real child
processes)."""

import os
import signal

import pytest
from support_processes import child_pids

from webtext.runtime import processes


def square_and_pid(task, offset):
    return task * task + offset, os.getpid()


def warm():
    os.environ["WEBTEXT_TEST_WARM"] = "yes"


def check_warm(task):
    return task, os.environ.get("WEBTEXT_TEST_WARM")


def sleep_then_return(seconds):
    import time

    time.sleep(seconds)
    return seconds


def fail_on_three(task):
    if task == 3:
        raise ValueError("three is bad")
    return task


def die_on_two(task):
    if task == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer ends a process
    return task


def test_tasks_run_in_child_processes_and_every_result_comes_back():
    with processes.TaskPool(2) as tp:
        results = []
        for task in range(10):
            results += tp.submit(square_and_pid, task, 1)
        results += tp.drain()
    assert sorted(r for r, _ in results) == [t * t + 1 for t in range(10)]
    pids = {p for _, p in results}
    assert os.getpid() not in pids and len(pids) == 2


def test_one_process_runs_inline():
    with processes.TaskPool(1) as tp:
        assert tp.submit(square_and_pid, 3, 0) == [(9, os.getpid())]
        assert tp.drain() == []


def test_a_lone_task_runs_inline_without_starting_a_process():
    with processes.TaskPool(2) as tp:
        assert tp.submit(square_and_pid, 4, 0) == []
        assert tp.drain() == [(16, os.getpid())]


@pytest.mark.parametrize("fn, message", [(fail_on_three, "three is bad"),   # the child's traceback
                                         (die_on_two, "died")])               # an error, not a hang
def test_a_failing_task_or_a_dying_child_stops_the_pool(fn, message):
    with processes.TaskPool(2) as tp:
        with pytest.raises(processes.TaskError, match=message):
            for task in range(6):
                tp.submit(fn, task)
            tp.drain()


def test_close_stops_and_reaps_every_child_of_the_pool():
    before = child_pids()
    tp = processes.TaskPool(2)
    results = tp.submit(square_and_pid, 1, 0) + tp.submit(square_and_pid, 2, 0) + tp.drain()
    pids = set(tp.pids())
    assert {p for _, p in results} <= pids and len(pids) == 2
    assert pids <= child_pids()   # idle, alive, between tasks
    tp.close()
    assert child_pids() <= before   # no child left, not even a zombie
    assert not tp.pids()


def test_two_pools_have_children_of_their_own():
    before = child_pids()
    with processes.TaskPool(2) as first, processes.TaskPool(2) as second:
        ones = first.submit(square_and_pid, 1, 0) + first.submit(square_and_pid, 2, 0) + first.drain()
        twos = second.submit(square_and_pid, 1, 0) + second.submit(square_and_pid, 2, 0) + second.drain()
        assert {p for _, p in ones} <= set(first.pids()) and {p for _, p in twos} <= set(second.pids())
        assert not set(first.pids()) & set(second.pids())
        first.close()   # closing one leaves the other's children working
        assert set(second.pids()) <= child_pids()
        more = second.submit(square_and_pid, 3, 0) + second.submit(square_and_pid, 4, 0) + second.drain()
        assert sorted(r for r, _ in more) == [9, 16]
    assert child_pids() <= before


def test_a_pool_closed_after_a_failure_kills_its_busy_children():
    before = child_pids()
    tp = processes.TaskPool(2)
    tp.submit(fail_on_three, 3)
    tp.submit(sleep_then_return, 60)   # still running when the pool is closed
    with pytest.raises(processes.TaskError, match="three is bad"):
        tp.drain()
    tp.close()
    assert child_pids() <= before


def test_a_child_runs_its_setup_first_and_then_calls_and_is_reaped():
    child = processes.Child(warm)
    assert not child.ready and child.busy
    assert child.receive() == ("ok", None) and child.ready and not child.busy
    child.send(check_warm, 5)
    assert child.receive() == ("ok", (5, "yes"))
    child.send(fail_on_three, 3)
    status, trace = child.receive()
    assert status == "error" and "three is bad" in trace
    child.ask_to_exit()
    assert child.reap() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)


def tick_in_child(n, stage):
    from webtext.runtime import progress

    progress.tick(stage, n)
    progress.flush()
    return os.getpid()


def test_every_progress_run_counts_from_zero_here_and_in_the_pools_children():
    from webtext.runtime import progress

    with processes.TaskPool(2) as p:  # one pool whose children serve two progress runs
        for _ in range(2):  # two runs of one stage in one process
            with progress.Progress("stagex", total=7):
                directory = os.environ[progress.ENV]
                progress.tick("stagex", 3)
                progress.flush()
                pids = p.submit(tick_in_child, 2, "stagex") + p.submit(tick_in_child, 2, "stagex") + p.drain()
                assert set(pids) <= set(p.pids()) and os.getpid() not in pids
                assert progress._total(directory, "stagex") == 7  # not the first run's counts, none lost


def test_pool_map_leaves_no_child_behind_once_its_pipeline_is_done():
    """Beam's in-memory DirectRunner tears every DoFn down when the pipeline ends: PoolMap's pool is closed
    there, so its children (two processes, several tasks) are gone when the pipeline returns."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from webtext.runtime.beam import PoolMap

    before = child_pids()
    options = beam.options.pipeline_options.PipelineOptions(
        ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
    with beam.Pipeline(options=options) as p:
        results = (p | beam.Create(list(range(8))) | PoolMap(square_and_pid, 2, 1)
                   | beam.Map(lambda r: r[0]))
        assert_that(results, equal_to([t * t + 1 for t in range(8)]))
    assert child_pids() <= before


def test_the_stages_local_processes_run_their_real_tasks_without_importing_beam(tmp_path):
    """Links' dump files, fetch's host groups, dedup's row groups (sketches, payloads, rows kept) and the
    merge of sorted runs run in local processes that never import Beam: each would spend ~0.6 s of CPU on
    it, twice per build. The children run the real task functions with real arguments, then are asked
    what they imported."""
    import pyarrow as pa

    from webtext.dedup import minhash
    from webtext.dedup import task as dedup_task
    from webtext.demo.dump import sample_lines, write_lines
    from webtext.fetch import crawler
    from webtext.fetch import task as fetch_task
    from webtext.fetch.schema import PARTS_DIR
    from webtext.links import rules
    from webtext.links import task as links_task
    from webtext.runtime import datasets

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
    with processes.TaskPool(2) as tp:
        kept = []
        for fn, tasks, args in [
            (links_task.links_of_file, dumps, (rules.LinkRules(),)),
            (fetch_task.fetch_group, [(0, []), (1, [])], (crawler.CrawlConfig(), str(tmp_path / "fetch"), 1,
                                                          crawler.RedirectFilter())),
            (dedup_task.sketch_row_group, [(str(docs), 0)] * 2, (5, hasher, lsh)),
            (dedup_task.payload_row_group, [(str(docs), 0)] * 2, (5, "exact", hasher, ids)),
            (dedup_task.keep_row_group, [(str(docs), 0)] * 2, (schema, str(tmp_path / "runs"), {}, 2)),
        ]:
            done = [r for task in tasks for r in tp.submit(fn, task, *args)]  # one task each child
            done += tp.drain()
            assert len(done) == 2
            if fn is dedup_task.keep_row_group:
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
    assert (tmp_path / "fetch" / PARTS_DIR / "webtext-r0001-g00001.parquet").exists()
    assert sorted(r["doc_id"] for r in datasets.read_rows(out, "documents")) == sorted(ids)


def shout(task):
    print(f"stray print {task}")  # a task's print goes to the child's stderr, never into the answers
    return task


def test_a_tasks_prints_reach_stderr_even_as_the_child_exits_at_once(capfd, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the children's stdout is then block-buffered
    with processes.TaskPool(2) as tp:
        results = tp.submit(shout, 1) + tp.submit(shout, 2) + tp.drain()
    # Closed: the children exited without their interpreter's teardown, their buffers flushed first.
    assert sorted(results) == [1, 2]
    err = capfd.readouterr().err
    assert "stray print 1" in err and "stray print 2" in err
