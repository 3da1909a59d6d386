"""Fan a stage's CPU-heavy step out to local processes from inside one DoFn.

Beam's DirectRunner parallelises with whole worker processes (multi_processing mode) that exchange every
element with the runner over gRPC; for stages whose work is a few heavy tasks (a slice of a Parquet file,
a dump file) that exchange and the workers' start-up cost more than the work itself on a small machine.
So such a stage runs the DirectRunner in memory, in one process, and its heavy DoFn hands each task to a
`TaskPool`: `processes` fresh interpreters (never forks of a process that holds runner threads) running
one top-level function per task. With one process the function runs inline. On Dataflow a stage asks for one process: Dataflow already runs one SDK process per
core (see `beam.local_processes`).

The function must be a pure function of its task (it may read files); results come back in completion
order, which Beam does not promise either, so every stage's output is sorted before it is written. This
module imports no Beam: a child starts with only what its tasks import. `beam.PoolMap` is the DoFn side.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from webtext.runtime import progress# stdlib only: a child still starts with what its tasks import


class TaskError(RuntimeError):
    """`fn` raised in a child: a bug (bad records are the function's to report), so the stage stops."""


def spawn_module(module: str) -> tuple[subprocess.Popen, Connection, Connection]:
    """Start `python -m module` talking pickles over its stdin/stdout: (process, to it, from it)."""
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            close_fds=True)
    to_child = Connection(os.dup(proc.stdin.fileno()), readable=False)
    from_child = Connection(os.dup(proc.stdout.fileno()), writable=False)
    proc.stdin.close()
    proc.stdout.close()
    return proc, to_child, from_child


def child_pipes() -> tuple[Connection, Connection]:
    """In a child started by `spawn_module`: (requests, answers). The pipes are fds 0 and 1; the answers
    move off fd 1 (which becomes stderr) so a stray print cannot corrupt them."""
    requests = Connection(0, writable=False)
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    return requests, answers


class _Child:
    """A plain `python -m webtext.runtime.pool` process (not a fork of a process holding runner threads,
    and not multiprocessing's spawn, which re-imports the caller's main script), taking length-prefixed
    pickles (fn, task, args) on its stdin and answering ("ok", result) or ("error", traceback)."""

    def __init__(self):
        self.proc, self.to_child, self.from_child = spawn_module("webtext.runtime.pool")
        self.busy = False
        self.warming = False   # busy with a warm-up task whose answer is not a result
        # The caller's import path, so a task function from any module it can import (a script's, a
        # test's) can be found by the child too.
        self.to_child.send(list(sys.path))

    def ask_to_exit(self) -> None:
        try:
            self.to_child.send(None)
        except OSError:
            pass

    def close(self) -> None:
        self.ask_to_exit()
        self.reap()

    def reap(self) -> None:
        """Wait for a child asked to exit (killed after 5 s) and close its pipes."""
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for conn in (self.to_child, self.from_child):
            conn.close()


_IDLE: list[_Child] = []   # children of finished pools, kept for the next pool of this process


def shutdown() -> None:
    """Stop the idle children now and reap them (all asked at once, so they wind down together): a caller
    that measures its CPU time or memory per run wants them gone."""
    for child in _IDLE:
        child.ask_to_exit()
    while _IDLE:
        _IDLE.pop().reap()


@atexit.register
def _at_exit() -> None:
    """At exit the idle children are only told to go: each exits on its own, and this process does not
    wait for their interpreters to wind down (~0.4 s at the end of a `webtext build`)."""
    while _IDLE:
        _IDLE.pop().ask_to_exit()


def prestart(processes: int, warm_up: Callable[..., Any] | None = None, *args) -> None:
    """Start the children of a coming pool now, each running `warm_up(None, *args)` (its imports, its
    tables), so that they get ready while this process builds its pipeline rather than after."""
    if processes < 2:
        return
    while len(_IDLE) < processes:
        child = _Child()
        if warm_up is not None:
            child.to_child.send((warm_up, None, args, progress.directory()))
            child.busy = child.warming = True
        _IDLE.append(child)


def _take_child() -> _Child:
    while _IDLE:
        child = _IDLE.pop()
        if child.proc.poll() is None:
            return child
        child.close()
    return _Child()


class TaskPool:
    """Run `fn(task, *args)` for each submitted task in `processes` child processes (inline when 1), one
    task per child at a time. `submit` returns the results that finished while it waited for a free child;
    `drain` returns the rest. A task that raises stops the stage with the child's traceback. The first task
    waits for a second: a lone task (a small input) runs inline at `drain`, and no process is started."""

    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = processes
        self._children: list[_Child] = []
        self._held = None   # (fn, task, args) of the first task, until a second one comes

    def submit(self, fn: Callable[..., Any], task, *args) -> list:
        if self.processes == 1:
            return [fn(task, *args)]
        if not self._children:
            if self._held is None:
                self._held = (fn, task, args)
                return []
            self._children = [_take_child() for _ in range(self.processes)]
            (held_fn, held_task, held_args), self._held = self._held, None
            return self._send(held_fn, held_task, held_args) + self._send(fn, task, args)
        return self._send(fn, task, args)

    def _send(self, fn, task, args) -> list:
        done = []
        while all(c.busy for c in self._children):
            done += self._wait_once()
        child = next(c for c in self._children if not c.busy)
        child.to_child.send((fn, task, args, progress.directory()))
        child.busy = True
        return done

    def drain(self) -> list:
        done = []
        if self._held is not None:
            (fn, task, args), self._held = self._held, None
            done.append(fn(task, *args))
        while any(c.busy and not c.warming for c in self._children):
            done += self._wait_once()
        return done

    def _wait_once(self) -> list:
        busy = [c for c in self._children if c.busy]
        ready = wait([c.from_child for c in busy])
        done = []
        for child in (c for c in busy if c.from_child in ready):
            try:
                status, value = child.from_child.recv()
            except (EOFError, OSError):
                code = child.proc.wait()
                raise TaskError(f"a local worker process died (exit status {code})") from None
            child.busy = False
            if status != "ok":
                raise TaskError(f"a task failed in a local worker process:\n{value}")
            if child.warming:
                child.warming = False
            else:
                done.append(value)
        return done

    def close(self) -> None:
        """Give the children back for the next pool of this process (its later steps start no new
        interpreters); a child still busy after an error is stopped instead."""
        for child in self._children:
            if child.busy and not child.warming:
                child.proc.kill()
                child.close()
            else:
                _IDLE.append(child)
        self._children, self._held = [], None

    def __enter__(self) -> "TaskPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _child_main() -> None:
    requests, answers = child_pipes()
    from webtext.cli import configure_logging

    configure_logging()
    sys.path[:0] = [p for p in requests.recv() if p not in sys.path]
    while True:
        try:
            message = requests.recv()
        except EOFError:
            return
        except Exception:  # a task whose function or arguments cannot be unpickled here
            answers.send(("error", traceback.format_exc()))
            continue
        if message is None:
            return
        fn, task, args, progress_dir = message
        progress.report_to(progress_dir)  # children outlive a stage: report where the parent shows it now
        try:
            answers.send(("ok", fn(task, *args)))
        except Exception:
            answers.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    _child_main()
    # Asked to go (or its parent is gone): nothing of its heap needs freeing, so skip the interpreter's
    # teardown (~0.3 s of CPU with Beam and pyarrow loaded, at the end of every build).
    sys.stdout.flush()  # fd 1 is stderr here (see child_pipes): a task's stray prints
    sys.stderr.flush()
    os._exit(0)
