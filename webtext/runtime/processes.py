"""Child processes, each owned by the object that started it, and `TaskPool`, which fans a stage's
CPU-heavy step out to them from inside one DoFn.

A child is a plain `python -m webtext.runtime.processes` interpreter (`Child`): never a fork of this process,
which may hold Beam's runner threads and gRPC channels (a fork inherits their locks in whatever state they
were), and never multiprocessing's spawn or forkserver, which would run the caller's main script again in the
child and need process-wide state here (a server, a swapped `__main__`). A child takes this process's import
path, so it finds any function this process can import, and imports only what its calls need. It runs an
optional setup call first (imports, limits, warm caches), then one call at a time: length-prefixed pickles
(fn, args) on its stdin, answers ("ok", result) or ("error", traceback) on its stdout.

Every child belongs to the pool that started it, and that pool's `close()` stops and reaps all of them:
there is no process-wide list of children, so none outlives its owner and no two owners share one.

Why `TaskPool`: Beam's DirectRunner parallelises with whole worker processes (multi_processing mode) that
exchange every element with the runner over gRPC; for stages whose work is a few heavy tasks (a slice of a
Parquet file, a dump file) that exchange and the workers' start-up cost more than the work itself on a small
machine. So such a stage runs the DirectRunner in memory, in one process, and its heavy DoFn hands each task
to a `TaskPool` (`beam.PoolMap` is the DoFn side). On Dataflow a stage asks for one process, and the tasks run
inline: Dataflow already runs one SDK process per core (see `beam.local_processes`).

A task function must be a pure function of its task (it may read files); results come back in completion
order, which Beam does not promise either, so every stage's output is sorted before it is written. This
module imports no Beam: a child starts with only what its calls import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, wait
from typing import Any

from webtext.runtime import progress  # stdlib only: a child still starts with what its tasks import

MODULE = "webtext.runtime.processes"


class TaskError(RuntimeError):
    """`fn` raised in a child, or a child died: a bug (bad records are the function's to report), so the
    stage stops."""


class Child:
    """One child interpreter running calls sent to it, one at a time: `send(fn, *args)` starts `fn(*args)`
    there and `receive()` waits for its answer. Given `setup`, the child runs `setup(*setup_args)` first, as
    a call whose answer is the first to receive; `ready` is false until that answer came.

    Its owner ends it: `ask_to_exit` (it finishes nothing more and leaves) or `kill` (SIGKILL, at once),
    then `reap` (wait for it and close the pipes). `stop` does both for many children at once."""

    def __init__(self, setup: Callable[..., Any] | None = None, *setup_args):
        self.proc = subprocess.Popen([sys.executable, "-m", MODULE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, close_fds=True)
        self.pid = self.proc.pid
        # Connections of their own, for multiprocessing's framing and `wait`; Popen keeps no pipe.
        self.to_child = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.from_child = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.started = time.monotonic()
        self.busy = False             # a call (the setup included) is in flight
        self.ready = setup is None    # the setup call has answered
        try:
            self.to_child.send(list(sys.path))
            if setup is not None:
                self.send(setup, *setup_args)
        except OSError:  # it died at once: its owner sees that as end-of-file on its answers
            pass

    def send(self, fn: Callable[..., Any], *args) -> None:
        """Start `fn(*args)` in the child (nothing else in flight). OSError: the child is gone."""
        self.to_child.send((fn, args))
        self.busy = True

    def receive(self) -> tuple[str, Any]:
        """The answer to the call in flight: ("ok", its result) or ("error", its traceback). EOFError,
        OSError or pickle.UnpicklingError: the child died (`kill` it to learn its exit status)."""
        answer = self.from_child.recv()
        self.busy = False
        self.ready = True
        return answer

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def ask_to_exit(self) -> None:
        """Tell an idle child to go; it exits once it reads this (`reap` waits for it)."""
        try:
            self.to_child.send(None)
        except OSError:
            pass

    def kill(self) -> int:
        """Stop the child at once (SIGKILL) and reap it; its exit status, negative for a signal."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.reap()

    def reap(self, timeout: float = 5.0) -> int:
        """Wait for the child to exit (killed if it has not after `timeout` s) and close its pipes; its
        exit status."""
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self.to_child.close()
        self.from_child.close()
        return status


def stop(children: Iterable[Child]) -> None:
    """Stop `children` and reap them: idle ones are asked to exit, busy ones (a call or their setup in
    flight) killed. All are told before any is waited for, so they wind down together."""
    children = list(children)
    for child in children:
        if child.busy:
            if child.proc.poll() is None:
                child.proc.kill()
        else:
            child.ask_to_exit()
    for child in children:
        child.reap()


def answering(children: Iterable[Child], timeout: float | None = None) -> list[Child]:
    """The children with an answer (or end-of-file) to read, waiting up to `timeout` s (None: for one)."""
    by_connection = {child.from_child: child for child in children}
    return [by_connection[c] for c in wait(list(by_connection), timeout=timeout)]


def _run_task(progress_dir: str | None, fn: Callable[..., Any], task, args: tuple):
    """A `TaskPool` task in a child, reporting progress where the parent shows it now (a pool may serve
    several progress runs)."""
    progress.report_to(progress_dir)
    return fn(task, *args)


class TaskPool:
    """Run `fn(task, *args)` for each submitted task in `processes` child processes (inline when 1), one
    task per child at a time. `submit` returns the results that finished while it waited for a free child;
    `drain` returns the rest. A task that raises, or a child that dies, stops the stage with a `TaskError`.

    Children start with the second task: a lone task (a small input) runs inline at `drain`, and no process
    is started. `close()` (or leaving the `with` block) stops and reaps every child of the pool."""

    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = processes
        self._children: list[Child] = []
        self._held = None   # (fn, task, args) of the first task, until a second one comes

    def _start(self) -> None:
        while len(self._children) < self.processes:
            self._children.append(Child())

    def pids(self) -> list[int]:
        """The process ids of this pool's children (none before they start)."""
        return [c.pid for c in self._children]

    def submit(self, fn: Callable[..., Any], task, *args) -> list:
        if self.processes == 1:
            return [fn(task, *args)]
        if not self._children:
            if self._held is None:
                self._held = (fn, task, args)
                return []
            self._start()
        done = []
        if self._held is not None:
            (held_fn, held_task, held_args), self._held = self._held, None
            done += self._send(held_fn, held_task, held_args)
        return done + self._send(fn, task, args)

    def _send(self, fn, task, args) -> list:
        done = []
        while all(c.busy for c in self._children):
            done += self._wait_once()
        child = next(c for c in self._children if not c.busy)
        try:
            child.send(_run_task, progress.directory(), fn, task, args)
        except OSError:
            raise TaskError(f"a local worker process died (exit status {child.kill()})") from None
        return done

    def drain(self) -> list:
        done = []
        if self._held is not None:
            (fn, task, args), self._held = self._held, None
            done.append(fn(task, *args))
        while any(c.busy for c in self._children):
            done += self._wait_once()
        return done

    def _wait_once(self) -> list:
        done = []
        for child in answering(c for c in self._children if c.busy):
            try:
                status, value = child.receive()
            except (EOFError, OSError):
                raise TaskError(f"a local worker process died (exit status {child.kill()})") from None
            if status != "ok":
                raise TaskError(f"a task failed in a local worker process:\n{value}")
            done.append(value)
        return done

    def close(self) -> None:
        """Stop and reap every child of this pool (one still busy after an error is killed)."""
        children, self._children, self._held = self._children, [], None
        stop(children)

    def __enter__(self) -> TaskPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _child_main() -> None:
    """Serve calls until told to go (None) or the parent is gone (end-of-file)."""
    # The requests come on fd 0, the answers go out on fd 1, which then becomes stderr: a call's stray
    # print cannot corrupt the answers.
    requests = Connection(0, writable=False)
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    from webtext.cli import configure_logging

    configure_logging()
    sys.path[:0] = [p for p in requests.recv() if p not in sys.path]
    while True:
        try:
            message = requests.recv()
        except EOFError:
            return
        except Exception:  # a call whose function or arguments cannot be unpickled here
            answer = ("error", traceback.format_exc())
        else:
            if message is None:
                return
            fn, args = message
            try:
                answer = ("ok", fn(*args))
            except Exception:
                answer = ("error", traceback.format_exc())
        try:
            answers.send(answer)
        except OSError:  # the parent is gone
            return
        except Exception:  # a result that cannot be pickled (nothing was written)
            answers.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    _child_main()
