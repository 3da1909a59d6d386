"""The polite crawler behind `webtext fetch`: one host group's links -> log rows (and WARC records).

Plain Python, no Beam: it runs in the stage's local processes, which then never import Beam (one host group's
whole task there is `webtext.fetch.task.fetch_group`). `GroupCrawler.crawl` runs `concurrency` threads over the
group's hosts. A host is a queue of links with at most `per_host` requests in flight and `host_delay` (or its
robots.txt Crawl-delay, if longer) between them; a thread takes whichever host is ready first, so many hosts
run at once and none is hammered.
Waiting (host delays, retry backoff, Retry-After) is a time in the host's queue, never a sleeping thread.

robots.txt (RFC 9309) is fetched once per origin per group, before that origin's first page: 2xx is parsed
(Protego), 4xx allows all, 5xx and network failures disallow all (a transient error: the next run retries).
Redirects are followed here, not in the client, so each hop is checked again: link filters, robots and,
in the client, the address actually connected to. A hop to another host (and that origin's robots.txt) is
requested by the thread that holds the first host's slot: the other host's limit and delay do not apply
to it, a deliberate simplification (redirect targets are few and their hosts mostly in other groups).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import heapq
import itertools
import posixpath
import random
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from protego import Protego

from webtext.fetch.http import MAX_REDIRECTS, ClientConfig, FetchError, Hop, HttpClient, KiB, MiB
from webtext.fetch.schema import WARC_DIR
from webtext.runtime import fs, stats
from webtext.runtime.warc import GZIP_LEVEL as WARC_GZIP_LEVEL
from webtext.runtime.warc import RecordWriter, encode_exchange

PER_HOST = 1                 # requests in flight per host
HOST_DELAY_S = 1.0           # pause between two requests to one host
CONCURRENCY = 64             # fetch threads per worker
MAX_CRAWL_DELAY_S = 30.0     # a robots.txt Crawl-delay above this skips the host
RETRIES = 2                  # extra attempts for 408/429/500/502/503/504, connection errors and timeouts
BACKOFF_S = 2.0              # first retry waits about this long; doubles each time, with jitter
MAX_RETRY_AFTER_S = 60.0     # a longer Retry-After is not waited for in this run (the next run retries)
ROBOTS_MAX_BYTES = 512 * KiB  # RFC 9309: parse at least 500 KiB
WARC_MAX_BYTES = 1024 * MiB  # roll to a new WARC file past this size
PROGRESS_EVERY_S = 0.5


@dataclasses.dataclass(frozen=True)
class CrawlConfig:
    client: ClientConfig = ClientConfig()
    per_host: int = PER_HOST
    host_delay: float = HOST_DELAY_S
    concurrency: int = CONCURRENCY
    robots: bool = True
    max_crawl_delay: float = MAX_CRAWL_DELAY_S
    retries: int = RETRIES
    backoff: float = BACKOFF_S
    max_retry_after: float = MAX_RETRY_AFTER_S
    max_redirects: int = MAX_REDIRECTS
    warc_max_bytes: int = WARC_MAX_BYTES
    warc_gzip_level: int = WARC_GZIP_LEVEL

    def __post_init__(self):
        if self.per_host < 1:
            raise ValueError("--per-host must be at least 1")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")

    @property
    def robots_agent(self) -> str:
        """The product token robots.txt groups are matched against (`webtext` for the default agent)."""
        return self.client.user_agent.split("/", 1)[0].split()[0]


# ---------------------------------------------------------------------------------------------------------
# robots.txt

@dataclasses.dataclass(frozen=True)
class Robots:
    """One origin's robots.txt decision."""
    parser: Protego | None = None       # None: allow everything (4xx, or robots off)
    failure: FetchError | None = None   # why robots.txt could not be read: everything is disallowed
    crawl_delay: float = 0.0

    def denies(self, url: str, agent: str) -> FetchError | None:
        """None if `url` may be fetched. A robots.txt that failed at the network level (dns, connect, tls,
        blocked_address, ...) fails the page with the same class: the page would fail the same way."""
        f = self.failure
        if f is not None:
            if f.error in ("http_4xx", "http_5xx", "redirects", "http_other", "protocol", "decode", "too_large"):
                return FetchError("robots", f"robots.txt unreachable: {f.error}: {f.detail}", transient=True)
            return FetchError(f.error, f"robots.txt: {f.detail}", transient=f.transient)
        if self.parser is not None and not self.parser.can_fetch(url, agent):
            return FetchError("robots", "disallowed by robots.txt")
        return None


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def parse_robots(text: str, agent: str) -> Robots:
    parser = Protego.parse(text)
    delay = parser.crawl_delay(agent) or 0.0
    rate = parser.request_rate(agent)
    if rate is not None and rate.requests:
        delay = max(delay, rate.seconds / rate.requests)
    return Robots(parser=parser, crawl_delay=float(delay))


class RobotsCache:
    """robots.txt per origin, fetched at most once (concurrent askers wait for the first fetch)."""

    def __init__(self, client: HttpClient, config: CrawlConfig, count: stats.Count):
        self.client, self.config, self.count = client, config, count
        self._rules: dict[str, Robots] = {}
        self._locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._lock = threading.Lock()

    def peek(self, origin: str) -> Robots | None:
        if not self.config.robots:
            return Robots()
        return self._rules.get(origin)

    def get(self, origin: str) -> Robots:
        found = self.peek(origin)
        if found is not None:
            return found
        with self._lock:
            lock = self._locks[origin]
        with lock:
            if origin not in self._rules:
                self._rules[origin] = self._fetch(origin)
            return self._rules[origin]

    def _fetch(self, origin: str) -> Robots:
        self.count("robots_fetched")
        url = origin + "/robots.txt"
        deadline = time.monotonic() + self.config.client.total_timeout
        try:
            for _ in range(self.config.max_redirects + 1):
                hop = self.client.request(url, deadline, raw=True, max_bytes=ROBOTS_MAX_BYTES)
                if hop.location is None:
                    self.count("robots_2xx")
                    return parse_robots(hop.body.decode("utf-8", "replace"), self.config.robots_agent)
                url = urljoin(url, hop.location)
            self.count("robots_unreachable")
            return Robots(failure=FetchError("redirects", f"more than {self.config.max_redirects} redirects"))
        except FetchError as e:
            if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                self.count("robots_4xx")
                return Robots()
            self.count("robots_unreachable")
            return Robots(failure=e)


# ---------------------------------------------------------------------------------------------------------
# Scheduling: hosts ready soonest first

@dataclasses.dataclass
class Task:
    link: dict
    attempts: int = 0
    elapsed: float = 0.0


@dataclasses.dataclass
class _Host:
    name: str
    queue: collections.deque
    delay: float
    in_flight: int = 0
    not_before: float = 0.0
    version: int = 0


class HostScheduler:
    """Hands out (host, task) pairs honouring per-host concurrency and delays; thread-safe."""

    def __init__(self, links: list[dict], per_host: int, delay: float, clock: Callable[[], float] = time.monotonic):
        by_host: dict[str, collections.deque] = {}
        for link in links:
            by_host.setdefault(link.get("host") or "", collections.deque()).append(Task(link))
        self.hosts = {name: _Host(name, q, delay) for name, q in sorted(by_host.items())}
        self.per_host, self.clock = per_host, clock
        self.open = len(links)
        self._heap: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        for host in self.hosts.values():
            self._push(host)

    def _push(self, h: _Host) -> None:
        if h.queue and h.in_flight < self.per_host:
            h.version += 1
            heapq.heappush(self._heap, (h.not_before, next(self._seq), h.version, h.name))

    def take(self) -> tuple[_Host, Task] | None:
        """The next task whose host may be contacted now; waits if none is ready; None when all are done."""
        with self._cv:
            while True:
                if self.open == 0:
                    return None
                while self._heap:
                    _, _, version, name = self._heap[0]
                    h = self.hosts[name]
                    if version == h.version and h.queue and h.in_flight < self.per_host:
                        break
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                wait = self._heap[0][0] - self.clock()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                h = self.hosts[heapq.heappop(self._heap)[3]]
                task = h.queue.popleft()
                h.in_flight += 1
                if h.queue and h.in_flight < self.per_host:  # another slot of this host is free
                    self._push(h)
                    self._cv.notify()
                return h, task

    def finish(self, h: _Host, requeue: Task | None = None, contacted: bool = True,
               wait: float = 0.0, delay: float | None = None) -> None:
        """A task is done (`requeue` None) or goes back to the head of its host's queue. `contacted`: the
        host was sent a request (its delay applies from now); `wait`: hold the host this much longer;
        `delay`: the host's delay from now on (a robots.txt Crawl-delay)."""
        with self._cv:
            now = self.clock()
            h.in_flight -= 1
            if delay is not None:
                h.delay = max(h.delay, delay)
            if contacted:
                h.not_before = max(h.not_before, now + h.delay)
            if wait:
                h.not_before = max(h.not_before, now + wait)
            if requeue is None:
                self.open -= 1
                if self.open == 0:
                    self._cv.notify_all()
            else:
                h.queue.appendleft(requeue)
            self._push(h)
            self._cv.notify()


# ---------------------------------------------------------------------------------------------------------
# WARC output of one group

class WarcSink:
    """WARC files of one host group: written under temporary names, renamed to their final (deterministic)
    names by `commit()` once the group is done, so a retried bundle rewrites the same names and a killed
    one leaves only temporary files. Rolls to a new file past `max_bytes`. Thread-safe."""

    def __init__(self, output_dir: str, prefix: str, max_bytes: int = WARC_MAX_BYTES,
                 gzip_level: int = WARC_GZIP_LEVEL):
        self.output_dir, self.prefix, self.max_bytes, self.gzip_level = output_dir, prefix, max_bytes, gzip_level
        self._lock = threading.Lock()
        self._token = uuid.uuid4().hex[:12]
        self._files: list[tuple[str, str]] = []   # (temporary path, final path)
        self._f = None
        self._writer: RecordWriter | None = None

    def _final_name(self, part: int) -> str:
        return f"{self.prefix}-{part:05d}.warc.gz"

    def _open_next(self) -> None:
        self._close_current()
        name = self._final_name(len(self._files))
        final = fs.join(self.output_dir, WARC_DIR, name)
        tmp = fs.join(self.output_dir, WARC_DIR, f".tmp-{self._token}-{name}")
        self._f = fs.open_write(tmp)
        self._files.append((tmp, final))
        self._writer = RecordWriter(self._f, posixpath.join(WARC_DIR, name))

    def _close_current(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f, self._writer = None, None

    def store(self, hop: Hop, fetched_at: str):
        encoded = encode_exchange(hop.url, request_headers=hop.request_headers, status=hop.status,
                                  reason=hop.reason, response_headers=hop.headers, body=hop.body, ip=hop.ip,
                                  date=fetched_at, level=self.gzip_level)
        with self._lock:  # only the append is serialised; threads compress in parallel
            if self._writer is None or self._writer.offset >= self.max_bytes:
                self._open_next()
            return self._writer.append(encoded)

    def commit(self) -> list[str]:
        with self._lock:
            self._close_current()
            for tmp, final in self._files:
                fs.rename(tmp, final)
            finals = [final for _, final in self._files]
            # An earlier attempt at this group (a retried bundle) may have rolled into more parts.
            pattern = fs.join(self.output_dir, WARC_DIR, f"{self.prefix}-*.warc.gz")
            keep = {posixpath.basename(f) for f in finals}
            fs.delete([p for p in fs.glob_or_empty(pattern) if posixpath.basename(p) not in keep])
            return finals

    def abort(self) -> None:
        with self._lock:
            self._close_current()
            fs.delete([tmp for tmp, _ in self._files if fs.exists(tmp)])


# ---------------------------------------------------------------------------------------------------------
# The group crawl

def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backoff_seconds(attempt: int, base: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: attempt 1 -> [base/2, base], 2 -> [base, 2 base], ..."""
    full = base * (2 ** (attempt - 1))
    return full / 2 + rng.uniform(0, full / 2)


def no_filter(url: str) -> str | None:
    return None


@dataclasses.dataclass
class Outcome:
    """What became of one link: a stored page (hop with body) or an error."""
    final_url: str | None = None
    hop: Hop | None = None
    error: FetchError | None = None
    redirects: int = 0
    ip: str | None = None
    by_robots: bool = False   # refused because of robots.txt (cached for the run: retrying cannot help)


class GroupCrawler:
    def __init__(self, client: HttpClient, config: CrawlConfig, count: stats.Count,
                 link_filter: Callable[[str], str | None] = no_filter, seed: int = 0):
        self.client, self.config, self.count, self.link_filter = client, config, count, link_filter
        self.robots = RobotsCache(client, config, count)
        self.rng = random.Random(seed)

    def follow(self, url: str, deadline: float) -> Outcome:
        """One attempt at `url`, following redirects, each hop checked again."""
        seen = {url}
        out = Outcome(final_url=None)
        agent = self.config.robots_agent
        for hop_no in range(self.config.max_redirects + 1):
            if hop_no:
                why = self.link_filter(url)
                if why:
                    out.error = FetchError("filtered", f"redirect to {url}: {why}")
                    return out
            try:
                denied = self.robots.get(origin_of(url)).denies(url, agent)
            except ValueError as e:
                out.error = FetchError("bad_url", str(e))
                return out
            if denied is not None:
                if hop_no:
                    denied.detail += f" (after a redirect to {url})"
                out.error, out.by_robots = denied, True
                return out
            try:
                hop = self.client.request(url, deadline)
            except FetchError as e:
                out.error, out.ip = e, e.ip or out.ip
                if e.ip:
                    out.final_url = url
                return out
            out.final_url, out.ip = url, hop.ip
            if hop.location is None:
                out.hop = hop
                return out
            out.redirects += 1
            try:
                nxt = urljoin(url, hop.location)
                scheme = urlsplit(nxt).scheme.lower()
            except ValueError as e:
                out.error = FetchError("redirects", f"bad Location {hop.location!r}: {e}", status=hop.status)
                return out
            if scheme not in ("http", "https"):
                out.error = FetchError("filtered", f"redirect to scheme {scheme!r}", status=hop.status)
                return out
            if nxt in seen:
                out.error = FetchError("redirects", f"redirect loop back to {nxt}", status=hop.status)
                return out
            seen.add(nxt)
            url = nxt
        out.error = FetchError("redirects", f"more than {self.config.max_redirects} redirects")
        return out

    def crawl(self, links: list[dict], sink: WarcSink | None, run: int = 1,
              on_progress: Callable[[int], None] | None = None) -> list[dict]:
        """Log rows for `links` (one per link), storing successful pages in `sink`. `on_progress(n)` is
        called from the calling thread with the links finished since its last call."""
        cfg = self.config
        sched = HostScheduler(links, cfg.per_host, cfg.host_delay)
        rows: list[dict] = []
        rows_lock = threading.Lock()

        def emit(task: Task, outcome: Outcome, started: str) -> None:
            row = log_row(task.link, outcome, task.attempts, task.elapsed, started, run)
            if outcome.hop is not None and sink is not None:
                loc = sink.store(outcome.hop, started)
                row.update(warc_file=loc.path, warc_offset=loc.offset, warc_length=loc.length,
                           payload_digest=loc.digest)
            self.count("links_done")
            self.count("fetched" if row["error"] is None else f"error_{row['error']}")
            with rows_lock:
                rows.append(row)

        failures: list[BaseException] = []

        def work() -> None:
            while True:
                taken = sched.take()
                if taken is None:
                    return
                host, task = taken
                try:
                    step = self._step(task)
                except Exception as e:  # a bug must cost one link, not the group
                    self.count("internal_errors")
                    step = Step(outcome=Outcome(error=FetchError("internal", f"{type(e).__name__}: {e}")),
                                started=utc_now())
                if step.requeue:
                    sched.finish(host, requeue=task, contacted=step.contacted, wait=step.wait, delay=step.delay)
                    continue
                sched.finish(host, contacted=step.contacted)
                try:
                    emit(task, step.outcome, step.started or utc_now())
                except BaseException as e:  # storage failed (disk full?): the group fails and Beam retries it
                    failures.append(e)

        threads = [threading.Thread(target=work, name=f"fetch-{i}", daemon=True)
                   for i in range(max(1, min(cfg.concurrency, len(links))))]
        for t in threads:
            t.start()
        reported = 0
        for t in threads:
            while t.is_alive():
                t.join(PROGRESS_EVERY_S)
                if on_progress is not None and len(rows) > reported:
                    done = len(rows)
                    on_progress(done - reported)
                    reported = done
        if on_progress is not None and len(rows) > reported:
            on_progress(len(rows) - reported)
        if failures:
            raise failures[0]
        assert len(rows) == len(links), (len(rows), len(links))
        return rows

    def _step(self, task: Task) -> Step:
        """One turn of a task: its origin's robots.txt, or one attempt at the link. Touches no shared state
        but the robots cache, so the caller releases the host exactly once whatever happens here."""
        cfg = self.config
        url = task.link.get("url") or ""
        try:
            origin = origin_of(url)
        except ValueError:
            origin = None
        if origin and self.robots.peek(origin) is None:
            # The origin's first request is its robots.txt; the page waits its turn behind the host delay.
            rules = self.robots.get(origin)
            keep = rules.crawl_delay <= cfg.max_crawl_delay
            if not keep:
                self.count("origins_over_max_crawl_delay")
            return Step(requeue=True, contacted=True, delay=rules.crawl_delay if keep else None)
        rules = self.robots.peek(origin) if origin else None
        if rules is not None and rules.crawl_delay > cfg.max_crawl_delay:
            return Step(outcome=Outcome(error=FetchError(
                "crawl_delay", f"Crawl-delay {rules.crawl_delay:g}s > {cfg.max_crawl_delay:g}s")))
        started = utc_now()
        t0 = time.monotonic()
        task.attempts += 1
        outcome = self.follow(url, t0 + cfg.client.total_timeout)
        task.elapsed += time.monotonic() - t0
        err = outcome.error
        contacted = err is None or err.ip is not None or outcome.redirects > 0
        if err is not None and err.transient and task.attempts <= cfg.retries and not outcome.by_robots:
            ra = err.retry_after
            if ra is not None and ra > cfg.max_retry_after:
                err.detail += f" (Retry-After {ra:g}s > {cfg.max_retry_after:g}s: left for the next run)"
                self.count("retry_after_over_cap")
            else:
                self.count("retries")
                wait = max(ra or 0.0, backoff_seconds(task.attempts, cfg.backoff, self.rng))
                return Step(requeue=True, contacted=contacted, wait=wait)
        return Step(outcome=outcome, started=started, contacted=contacted)


@dataclasses.dataclass
class Step:
    """What a task's turn came to: back in the queue (`requeue`) or done with `outcome`."""
    outcome: Outcome | None = None
    started: str = ""
    requeue: bool = False
    contacted: bool = False
    wait: float = 0.0
    delay: float | None = None


def log_row(link: dict, outcome: Outcome, attempts: int, elapsed: float, fetched_at: str, run: int) -> dict:
    err, hop = outcome.error, outcome.hop
    status = hop.status if hop is not None else (err.status if err is not None else None)
    return {
        "url": link.get("url"),
        "key": link.get("key"),
        "host": link.get("host"),
        "final_url": outcome.final_url,
        "status": status,
        "error": err.error if err is not None else None,
        "error_detail": " ".join(err.detail.split())[:1000] if err is not None else None,
        "transient": bool(err.transient) if err is not None else False,
        "attempts": attempts,
        "redirects": outcome.redirects,
        "bytes": len(hop.body) if hop is not None else None,
        "content_type": hop.content_type if hop is not None else None,
        "charset": hop.charset if hop is not None else None,
        "charset_source": hop.charset_source if hop is not None else None,
        "elapsed_s": round(elapsed, 6),
        "fetched_at": fetched_at,
        "warc_file": None,
        "warc_offset": None,
        "warc_length": None,
        "payload_digest": None,
        "ip": outcome.ip,
        "run": run,
        "score": link.get("score"),
        "num_submissions": link.get("num_submissions"),
        "subreddits": link.get("subreddits"),
        "first_created_utc": link.get("first_created_utc"),
    }


# ---------------------------------------------------------------------------------------------------------
# Redirect targets

@dataclasses.dataclass(frozen=True)
class RedirectFilter:
    """The links stage's rules that judge a URL on its own (scheme, file extension, Wikipedia, excluded
    domains), applied to every redirect target: a redirect must not smuggle in a link the links stage would
    have dropped. Built from the links directory's `_stats.json`, so the rules are the ones that run used."""
    schemes: frozenset = frozenset({"http", "https"})
    blocked_extensions: frozenset | None = None   # None: the links stage's default list
    drop_wikipedia: bool = True
    exclude_domains: frozenset = frozenset()

    @classmethod
    def from_links_dir(cls, links_dir: str) -> RedirectFilter:
        config = (stats.read_stats(links_dir) or {}).get("config") or {}
        kw = {}
        for name in ("schemes", "blocked_extensions", "exclude_domains"):
            if isinstance(config.get(name), list):
                kw[name] = frozenset(config[name])
        if isinstance(config.get("drop_wikipedia"), bool):
            kw["drop_wikipedia"] = config["drop_wikipedia"]
        return cls(**kw)

    def __call__(self, url: str) -> str | None:
        from webtext.links import urls

        try:
            parsed = urls.parse_url(url)
        except urls.UrlError as e:
            return f"bad URL: {e}"
        if parsed.scheme not in self.schemes:
            return f"scheme {parsed.scheme!r}"
        blocked = urls.BLOCKED_EXTENSIONS if self.blocked_extensions is None else self.blocked_extensions
        ext = urls.blocked_extension(parsed.path, blocked) if blocked else None
        if ext:
            return f"file type .{ext}"
        if self.drop_wikipedia and urls.is_wikipedia(parsed.host):
            return "Wikipedia"
        if urls.host_in(parsed.host, self.exclude_domains):
            return "excluded domain"
        return None
