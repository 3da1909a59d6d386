"""Run trafilatura in a pool of killable child processes, so one hostile page cannot stall or kill a worker.

trafilatura has no working timeout of its own and can hang, segfault or grow without bound on hostile pages.
Each child is a plain interpreter (`webtext.runtime.processes.Child`: never a fork of a Beam worker with its
threads and gRPC channels) that first sets its address-space limit and prepares trafilatura
(`_setup_child`), then handles one page at a time (`_extract_page`). The parent waits on every child's pipe
with the nearest deadline as timeout, and:

- a page that runs past `timeout_s` gets its child SIGKILLed (reason `timeout`);
- a child that dies (segfault, OOM kill) is noticed as end-of-file on its pipe (reason `crash`);
- a child over its address-space limit gets a MemoryError and reports it; it is then killed, as its heap
  cannot be trusted (reason `memory`);
- an exception inside trafilatura is reported and the child goes on (reason `error`);
- no main text found is reason `empty`.

Every child that goes away is replaced, and children are recycled after `recycle_after` pages because
trafilatura's and htmldate's caches only grow. The HTML is cut to `max_html_chars` before it is sent. Every
child belongs to its `ExtractorPool`, whose `close()` stops and reaps them all.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import os
import pickle
import signal
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator

from webtext.runtime import processes

TIMEOUT_S = 5.0              # per page; real pages take ~25 ms median, ~0.3 s at worst on the 922 eval pages
RECYCLE_AFTER = 1000         # pages per child before it is replaced (trafilatura/htmldate caches grow)
MEMORY_MB = 2048             # address-space limit of a child (RLIMIT_AS); 0 = none
MAX_HTML_CHARS = 2_000_000   # HTML cut here before parsing; the 922 eval pages are at most 1.6 MB
STARTUP_TIMEOUT_S = 120.0    # a child that cannot import trafilatura in this long means a broken install
MAX_STARTUP_FAILURES = 3     # children in a row that die before saying ready: give up, loudly

REUSE_PAGES = 1024           # texts of recent pages kept per pool, for pages with the same HTML under another URL

REASONS = ("ok", "empty", "timeout", "crash", "memory", "error")
# Outcomes the HTML alone decides, so pages with the same HTML share them. A timeout, crash or memory
# outcome may be the moment's (a busy machine, a child killed from outside): such a page's twins are tried.
SHARED_REASONS = ("ok", "empty", "error")
FAVOR = ("balanced", "precision", "recall")

# A small page that touches the lazily loaded parts of trafilatura (and its date and language helpers)
# before the first real page, so the first deadline is not spent on imports.
_WARMUP_HTML = ("<html lang='en'><head><title>Warm up</title><meta name='date' content='2020-01-02'></head>"
                "<body><article><h1>Warm up</h1>" + "<p>This paragraph warms up the extractor caches. " * 5
                + "</p><p>Posted on January 2, 2020 by someone.</p></article></body></html>")


@dataclasses.dataclass(frozen=True)
class ExtractSettings:
    """trafilatura's settings. Comments are always excluded, and `deduplicate` is always off: its cache
    makes one page's output depend on the pages seen before it, i.e. on order and worker count."""

    favor: str = "balanced"        # balanced | precision | recall
    include_tables: bool = True    # trafilatura's default

    def __post_init__(self):
        if self.favor not in FAVOR:
            raise ValueError(f"favor must be one of {FAVOR}, not {self.favor!r}")

    def kwargs(self) -> dict:
        """Keyword arguments for `trafilatura.bare_extraction` / `trafilatura.extract`."""
        from trafilatura.settings import set_date_params

        # htmldate's extensive search falls back to dateparser, which compiles regexes per locale on first
        # use: ~0.75 s per new language in every fresh child, for ~10% more dates found.
        return {"include_comments": False, "deduplicate": False, "include_tables": self.include_tables,
                "favor_precision": self.favor == "precision", "favor_recall": self.favor == "recall",
                "with_metadata": True, "date_extraction_params": set_date_params(extensive=False)}


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    processes: int = 1
    timeout_s: float = TIMEOUT_S
    recycle_after: int = RECYCLE_AFTER
    memory_mb: int = MEMORY_MB
    max_html_chars: int = MAX_HTML_CHARS
    settings: ExtractSettings = ExtractSettings()


@dataclasses.dataclass
class Outcome:
    task_id: object
    reason: str                    # one of REASONS
    text: str | None = None
    title: str | None = None
    date: str | None = None
    detail: str = ""               # one line for a human when reason != "ok"
    truncated: bool = False        # the HTML was cut to max_html_chars first


# trafilatura works out metadata that webtext does not keep, at ~30% of an extraction's CPU on the real
# eval pages: the author alone (a deep copy of the whole tree, then XPath searches) ~24%, categories, tags
# and license ~10%. The children replace these helpers of `trafilatura.metadata.extract_metadata` with ones
# that find nothing (the value each returns when a page has none); that function and everything it does for
# the title and date, which are kept, runs as before.
UNKEPT_METADATA = {"extract_author": lambda tree: None,
                   "extract_catstags": lambda metatype, tree: [],
                   "extract_license": lambda tree: None}


def check_unkept_metadata() -> None:
    """Raise RuntimeError unless this trafilatura has every helper `skip_unkept_metadata` replaces. The
    extract stage calls it once before its pipeline runs, so a trafilatura that renamed one stops the stage
    at start-up, not page by page in its children."""
    import trafilatura
    import trafilatura.metadata as metadata

    missing = [name for name in UNKEPT_METADATA if not callable(getattr(metadata, name, None))]
    if missing:
        raise RuntimeError(f"trafilatura {trafilatura.__version__} has no metadata.{', '.join(missing)}: "
                           "update webtext.extract.sandbox.UNKEPT_METADATA to this version")


def skip_unkept_metadata() -> None:
    """Make trafilatura skip the metadata webtext drops, in this whole process: call it only in a process
    that exists to extract for webtext (the sandbox children do). Text, title and date are unchanged."""
    import trafilatura.metadata as metadata

    check_unkept_metadata()
    for name, nothing in UNKEPT_METADATA.items():
        setattr(metadata, name, nothing)


def html_key(html: str) -> bytes:
    """What identifies a page's HTML for reuse: its SHA-1."""
    return hashlib.sha1(html.encode("utf-8", "surrogatepass")).digest()


def _kept_metadata(doc) -> dict:
    """The metadata webtext keeps of a trafilatura Document: title (NFC) and date."""
    return {"title": unicodedata.normalize("NFC", doc.title) if doc.title else None, "date": doc.date or None}


def metadata_in_process(html: str, url: str | None, kwargs: dict) -> tuple[str, dict | str | None]:
    """(reason, {title, date}) of a page whose text is already known from the same HTML under another URL.
    With webtext's settings (no links, no images) trafilatura's text does not depend on the URL; its
    metadata does (the date may come from the URL). This is the metadata step of `trafilatura.bare_extraction`
    alone: the same parse and the same `extract_metadata` call, with the options that step reads."""
    from trafilatura.metadata import extract_metadata
    from trafilatura.settings import Extractor
    from trafilatura.utils import load_html

    options = Extractor(url=url, with_metadata=True, date_params=kwargs["date_extraction_params"])
    tree = load_html(html, options.max_file_size)
    if tree is None:
        return "empty", "trafilatura found no HTML tree"
    return "ok", _kept_metadata(extract_metadata(tree, options.url, options.date_params, options.fast,
                                                 options.author_blacklist))


def extract_in_process(html: str, url: str | None, kwargs: dict) -> tuple[str, dict | str | None]:
    """(reason, payload) for one page, in this process: what a child runs. The payload is
    {text, title, date} when reason is "ok". `kwargs` is `ExtractSettings.kwargs()`."""
    import trafilatura

    doc = trafilatura.bare_extraction(html, url=url, **kwargs)
    if doc is None or not (doc.text or "").strip():
        return "empty", "trafilatura found no main text"
    # NFC, as `trafilatura.extract` returns its text (bare_extraction does not normalise).
    return "ok", {"text": unicodedata.normalize("NFC", doc.text), **_kept_metadata(doc)}


@dataclasses.dataclass
class _Task:
    """A page on its way to a child. `known_text` set: only its metadata is asked for (`metadata_in_process`),
    the text being that of the same HTML extracted before."""
    task_id: object
    html: str
    url: str | None
    truncated: bool
    key: bytes
    known_text: str | None = None
    deadline: float = 0.0


class _ExtractorChild(processes.Child):
    """A child that sets itself up for `config` and then extracts pages, with the page in flight and the
    number it has done."""

    def __init__(self, config: SandboxConfig):
        super().__init__(_setup_child, config.settings, config.memory_mb)
        self.task: _Task | None = None  # the page in flight
        self.done = 0


def _describe_exit(status: int | None) -> str:
    if status is not None and status < 0:
        try:
            return f"child killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"child killed by signal {-status}"
    return f"child exited with status {status}"


class ExtractorPool:
    """`processes` sandboxed trafilatura children. Use as a context manager; feed pages with `submit`
    (which returns the outcomes that finished while it waited for a free child) and collect the rest with
    `drain`, or call `extract_all`. Outcomes come in completion order, each with the caller's task id.

    A page whose HTML equals one extracted before (the same page under another URL: http and https, mobile
    and desktop hosts, tracking parameters) is not extracted again: its text is reused and a child works out
    only its metadata (`metadata_in_process`), as the date may come from the URL. A page whose twin is still
    in flight waits for it. A failure the HTML decides (no main text, trafilatura's error) is shared; after a
    timeout, crash or memory outcome the next twin is tried itself. Outcomes are those of extracting every
    page; the last REUSE_PAGES distinct HTMLs are remembered.

    `count(name, n=1)` receives: children_started, children_recycled, children_replaced (after a timeout,
    crash or memory outcome), html_truncated, pages_reused (text taken from the same HTML's extraction)."""

    def __init__(self, config: SandboxConfig = SandboxConfig(), count: Callable[..., None] | None = None):
        if config.processes < 1:
            raise ValueError("processes must be at least 1")
        self.config = config
        self.count = count or (lambda name, n=1: None)
        self._children: list[_ExtractorChild] = []
        self._exiting: list[_ExtractorChild] = []   # recycled, asked to exit, until reaped
        self._startup_failures = 0
        self._backlog: collections.deque[_Task] = collections.deque()  # ready to send to a free child
        self._twins: dict[bytes, list[_Task]] = {}   # HTML in flight -> its pages waiting for the outcome
        self._known: collections.OrderedDict[bytes, Outcome] = collections.OrderedDict()  # recent outcomes

    # -- lifecycle

    def __enter__(self) -> ExtractorPool:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        while len(self._children) < self.config.processes:
            self._spawn()

    def close(self) -> None:
        """Stop every child of the pool and reap it: busy ones are killed, idle ones asked to exit (all at
        once, so they wind down together)."""
        children, self._children = self._children + self._exiting, []
        self._exiting = []
        processes.stop(children)

    def pids(self) -> list[int]:
        return [c.pid for c in self._children]

    def _spawn(self) -> _ExtractorChild:
        self._reap_exited()
        child = _ExtractorChild(self.config)
        self._children.append(child)
        self.count("children_started")
        return child

    def _replace(self, child: _ExtractorChild) -> None:
        self._children.remove(child)
        self._spawn()

    def _reap_exited(self) -> None:
        """Reap the recycled children that have gone; the others go on winding down while the pool works."""
        for child in [c for c in self._exiting if c.exited()]:
            child.reap()
            self._exiting.remove(child)

    # -- work

    def submit(self, task_id, html: str, url: str | None = None) -> list[Outcome]:
        """Send one page to a free child, first waiting (and collecting outcomes) until one is free."""
        if not self._children:
            self.start()
        truncated = len(html) > self.config.max_html_chars
        if truncated:
            html = html[:self.config.max_html_chars]
            self.count("html_truncated")
        task = _Task(task_id, html, url, truncated, html_key(html))
        finished: list[Outcome] = []
        if task.key in self._twins:
            self._twins[task.key].append(task)
        elif task.key in self._known:
            self._known.move_to_end(task.key)
            finished += self._follow(task, self._known[task.key])
        else:
            self._twins[task.key] = []
            self._backlog.append(task)
        return finished + self._send_backlog()

    def drain(self) -> list[Outcome]:
        """Wait for every page in flight."""
        finished: list[Outcome] = []
        while self._backlog or any(c.task is not None for c in self._children):
            finished += self._send_backlog()
            if any(c.task is not None for c in self._children):
                finished += self._wait_once()
        return finished

    def extract_all(self, pages: Iterable[tuple[object, str, str | None]]) -> Iterator[Outcome]:
        """Outcomes of (task_id, html, url) pages, in completion order."""
        for task_id, html, url in pages:
            yield from self.submit(task_id, html, url)
        yield from self.drain()

    def _wait_once(self) -> list[Outcome]:
        now = time.monotonic()
        deadlines = [c.task.deadline for c in self._children if c.task is not None]
        deadlines += [c.started + STARTUP_TIMEOUT_S for c in self._children if not c.ready]
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        finished: list[Outcome] = []
        for child in processes.answering(self._children, timeout):
            finished += self._receive(child)
        now = time.monotonic()
        for child in list(self._children):
            if child.task is not None and now >= child.task.deadline and child in self._children:
                finished += self._lost(child, "timeout",
                                       f"no result within {self.config.timeout_s:g} s; child killed")
            elif not child.ready and now >= child.started + STARTUP_TIMEOUT_S:
                child.kill()
                raise RuntimeError(f"extractor child not ready after {STARTUP_TIMEOUT_S:g} s")
        return finished

    def _receive(self, child: _ExtractorChild) -> list[Outcome]:
        setting_up = not child.ready
        try:
            status, answer = child.receive()
        except (EOFError, OSError, pickle.UnpicklingError):
            if setting_up:
                self._failed_start(child, _describe_exit(child.kill()) + "; see its stderr above")
                return []
            if child.task is None:  # died while idle: nothing lost, just replace it
                child.kill()
                self._replace(child)
                return []
            return self._lost(child, "crash")
        if setting_up:
            if status != "ok":  # its setup raised: the traceback says why
                child.kill()
                self._failed_start(child, answer.rstrip())
            else:
                self._startup_failures = 0
            return []
        # The page call catches what trafilatura raises; an error here is one of the call itself (say, an
        # answer that cannot be pickled): the page's error all the same.
        reason, payload = answer if status == "ok" else ("error", answer.rstrip().splitlines()[-1])
        task = child.task
        child.task = None
        child.done += 1
        if reason != "ok":
            outcome = Outcome(task.task_id, reason, detail=str(payload or ""), truncated=task.truncated)
        else:  # a metadata-only answer's text is the one its HTML gave before
            text = payload["text"] if task.known_text is None else task.known_text
            outcome = Outcome(task.task_id, "ok", text, payload["title"], payload["date"], truncated=task.truncated)
        if reason == "memory":  # after a MemoryError its heap cannot be trusted
            child.kill()
            self.count("children_replaced")
            self._replace(child)
        elif child.done >= self.config.recycle_after:
            # It exits on its own; reaped later, so the pool does not wait for it to wind down.
            child.ask_to_exit()
            self._exiting.append(child)
            self.count("children_recycled")
            self._replace(child)
        return self._settle(task, outcome)

    def _failed_start(self, child: _ExtractorChild, why: str) -> None:
        """`child` (killed) never became ready: start another, unless too many in a row failed."""
        self._children.remove(child)
        self._startup_failures += 1
        if self._startup_failures >= MAX_STARTUP_FAILURES:
            raise RuntimeError(f"extractor children fail at startup: {why}")
        self._spawn()

    def _lost(self, child: _ExtractorChild, reason: str, detail: str = "") -> list[Outcome]:
        """The page in flight on `child` is lost with `reason`; the child is killed and replaced."""
        task = child.task
        child.task = None
        status = child.kill()
        self.count("children_replaced")
        self._replace(child)
        return self._settle(task, Outcome(task.task_id, reason, detail=detail or _describe_exit(status),
                                          truncated=task.truncated))

    # -- pages with the same HTML

    def _send_backlog(self) -> list[Outcome]:
        """Send every waiting task, each to a free child, waiting (and collecting outcomes) for one."""
        finished: list[Outcome] = []
        while self._backlog:
            child = next((c for c in self._children if c.ready and c.task is None), None)
            if child is None:
                finished += self._wait_once()
                continue
            task = self._backlog.popleft()
            task.deadline = time.monotonic() + self.config.timeout_s
            child.task = task
            try:
                child.send(_extract_page, self.config.settings, self.config.memory_mb, task.html, task.url,
                           task.known_text is not None)
            except OSError:  # it died since its last answer: the page has not started, so this is its crash
                finished += self._lost(child, "crash")
        return finished

    def _settle(self, task: _Task, outcome: Outcome) -> list[Outcome]:
        """`outcome` is the task's; a full extraction's also decides the pages with the same HTML."""
        if task.known_text is not None:
            return [outcome]
        twins = self._twins.pop(task.key, [])
        if outcome.reason not in SHARED_REASONS:
            if twins:  # the next one is extracted itself; the rest wait for it
                self._twins[task.key] = twins[1:]
                self._backlog.append(twins[0])
            return [outcome]
        self._known[task.key] = dataclasses.replace(outcome, task_id=None)
        if len(self._known) > REUSE_PAGES:
            self._known.popitem(last=False)
        finished = [outcome]
        for twin in twins:
            finished += self._follow(twin, self._known[task.key])
        return finished

    def _follow(self, task: _Task, first: Outcome) -> list[Outcome]:
        """A page whose HTML had `first` as its outcome: the same failure now, or its metadata asked for."""
        self.count("pages_reused")
        if first.reason != "ok":
            return [dataclasses.replace(first, task_id=task.task_id, truncated=task.truncated)]
        task.known_text = first.text
        self._backlog.append(task)
        return []


# -- the child process

def prepare_extractor(kwargs: dict | None = None) -> None:
    """What a process needs before its first page: trafilatura quiet (it logs every discarded page; reasons
    go back to the parent), its unkept metadata skipped and its lazily loaded parts warmed up."""
    import logging

    logging.disable(logging.CRITICAL)
    skip_unkept_metadata()
    extract_in_process(_WARMUP_HTML, None, kwargs if kwargs is not None else ExtractSettings().kwargs())


@functools.cache
def _kwargs(settings: ExtractSettings) -> dict:
    """A child's trafilatura arguments, worked out once per child (every page of it has the same settings)."""
    return settings.kwargs()


def _setup_child(settings: ExtractSettings, memory_mb: int) -> int:
    """A child's first call: its address-space limit (before trafilatura allocates anything), then
    trafilatura prepared. Returns its process id."""
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    prepare_extractor(_kwargs(settings))
    return os.getpid()


def _extract_page(settings: ExtractSettings, memory_mb: int, html: str, url: str | None,
                  metadata_only: bool) -> tuple[str, dict | str | None]:
    """A page call in a child: (reason, payload) of `extract_in_process`, or of `metadata_in_process` for a
    page whose text is known; what trafilatura raises becomes reason `error`, a MemoryError reason `memory`
    (the parent then kills this child)."""
    try:
        return (metadata_in_process if metadata_only else extract_in_process)(html, url, _kwargs(settings))
    except MemoryError:
        return "memory", f"over the {memory_mb} MB address-space limit"
    except Exception as e:  # trafilatura's own bugs (RecursionError included): report, keep serving
        return "error", f"{type(e).__name__}: {e}"
