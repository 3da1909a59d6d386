"""Prove that a change (a refactor, a file move) changed no output byte: run the same builds with the code of
two revisions and compare every file every stage writes (issue 17, "Must show").

    .venv/bin/python bench/same_outputs.py --before 401abc3 --after 9eb4416
    .venv/bin/python bench/same_outputs.py --before HEAD                 # HEAD vs the working tree (default)
    .venv/bin/python bench/same_outputs.py --before HEAD --after HEAD    # the check of the check: must pass
    .venv/bin/python bench/same_outputs.py --before HEAD --scenarios e2e --pages 0   # e2e only, every page

About 2.5 minutes on 2 cores (two e2e builds of 220 URLs, two demos, and up to a minute waiting for the
demo's port, see below). Exit status 0 only if nothing differs.

How. Each side is a directory of code: a revision is checked out with `git worktree add --detach` in a
scratch directory (removed at the end, as are all outputs unless --keep); `--after` may also name a
directory (default: this working tree, uncommitted edits included). Every run of a side is a new
`python -m webtext.cli ...` process with that tree first on PYTHONPATH (ahead of the venv's editable
install: each side's `webtext.__file__` is printed and checked), so the sides never share an import, and
only the command line is used, which old and new layouts both have. The sides run one after the other
with identical inputs, each writing to the SAME absolute output path (moved aside when the run ends), so
paths inside the outputs match.

Two scenarios:
  e2e   bench/e2e.py's web and job: the real pages of ../shared/data/web/trafilatura-eval served on
        127.0.0.1 by the after side's tests/support_webserver.py (`LoopbackWeb`, in a process of its own,
        started once, so both sides fetch the same bytes from the same port), --pages pages on 50 hosts
        plus --duplicates second URLs (default 200 + 20, as `bench/e2e.py --quick`), one dump written
        once, and `webtext build --job FILE` with --workers 2.
  demo  `webtext demo --seed 0 --train-seconds 1 --job JOBS/sample-local.toml --train-config
        JOBS/train-demo.toml`, JOBS being the side's own jobs/ (named because 9eb4416's demo looks for its
        default job under webtext/jobs/). The demo serves its sample web on its fixed port 8765 when that
        port is free, else on a random one, which would change every URL: before each side the script
        waits until 8765 can be bound the way the demo probes it (the previous demo's connections linger
        in TIME_WAIT for up to a minute) and checks that both demos said they used the same port. Each side's
        demo writes its own dump (OUTPUT/dumps/RS_2015-01.zst), compared byte for byte like any file. Its
        mtime goes into the links stage's `_build.json` (`inputs`) and so into every stage's fingerprint,
        which is why the demo's _build.json files (only they) have those masked (below); the e2e scenario's
        dump, outside the output root and shared by both sides, leaves every fingerprint compared as is.
        (Seeding the after side with the before side's dump would hide how the after side compresses it.)
        Compared: everything under the output root but the training run (run-demo/).

What differs between two runs of the same code, and is normalised (found by running HEAD against HEAD;
nothing else is). Files whose bytes are equal are "identical"; only the files below are then looked into:
  * JSON files: the raw texts (as written with indent 2, each key on its own line), with the value at each
    of these places replaced by `#` if it is a JSON string (started_at) or number (the others), must be
    equal byte for byte, so formatting, key order and number formats count; a value of another kind, or
    the same key at any other place (inside `config`, say), is compared as is (JSON_VOLATILE):
      */_stats.json: started_at, duration_s (top level)     */_build.json: seconds (top level)
      report.json: stages.*.seconds                         fetch/_runs/*.json: started_at (top level)
      shards/manifest.json, tokenizer/tokenizer_meta.json: upstream.started_at, upstream.duration_s
    demo only (DUMP_MTIME_VOLATILE): */_build.json's fingerprint and upstream (top level) and the mtime, the
    third item, of each entry of inputs; the stage, argv and the dump's path and size still count.
    Any other JSON file (tokenizer.json) byte for byte.
  * report.md: the seconds column of its "## Durations" table is masked; every other character must match.
  * fetch/warc/*.warc.gz: records (each its own gzip member) compared without WARC_VOLATILE (WARC-Date:
    the fetch time; WARC-Record-ID, WARC-Concurrent-To: random ids; WARC-Block-Digest: covers the HTTP
    Date) and without the response's HTTP `Date` header (the server's clock). Each side's block digests are
    recomputed and must match their blocks, and each request's WARC-Concurrent-To must name a response of
    its file. A host group's fetch threads append exchanges in the order they finish, so the records may
    come in another order (said so); the same records, as a multiset, must be in the same file.
  * fetch/log-*.parquet: the footer: writer, format version, Parquet and Arrow schema, key-value metadata,
    row count and rows of each row group, and of each column chunk its type, value count, compression,
    encodings, dictionary page, page indexes, bloom filter and statistics (but sizes and offsets, and the
    min/max of the volatile columns below); the bytes of every chunk (its pages) of every other column;
    then row by row every column but FETCH_LOG_VOLATILE (elapsed_s, fetched_at); warc_offset and
    warc_length (which move with the record order and compressed size) are replaced by whether they point
    at a response record with the row's final_url and payload_digest in the row's warc_file.
  * */errors-*.parquet: as above, the volatile column being `detail`, whose WARC offset
    ("(FILE.warc.gz @ OFFSET)") is masked.
  * Any other file (every other Parquet file, the Arrow shards, the dump): byte for byte.
One line per file: identical / identical after normalising (and what was) / DIFFERENT (the first differing
byte, JSON or report line, Parquet footer field, column chunk or row and column, WARC record and header,
or only on one side).
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import importlib.util
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pyarrow.parquet as pq
from e2e_job import job_for, toml_of, write_dump

REPO = Path(__file__).resolve().parents[1]
PAGES_DIR = REPO.parent / "shared" / "data" / "web" / "trafilatura-eval"
PYTHON = sys.executable
HOSTS = 50  # as bench/e2e.py

# What differs between two runs of the same code (found by comparing HEAD with HEAD); nothing else is normalised.
# JSON: (the files, as a pattern on the path under the output root) -> the places (key paths, "*" any key or
# list index) whose values are masked in the raw text, and the kind of value masked there (TEXT a JSON string,
# NUMBER a JSON number): anything else at those places, or anywhere else, is compared byte for byte.
TEXT, NUMBER = r'"(?:[^"\\]|\\.)*"', r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
JSON_VOLATILE = [
    (r"[^/]+/_stats\.json", {("started_at",): TEXT, ("duration_s",): NUMBER}),
    (r"[^/]+/_build\.json", {("seconds",): NUMBER}),
    (r"report\.json", {("stages", "*", "seconds"): NUMBER}),
    (r"fetch/_runs/[^/]+\.json", {("started_at",): TEXT}),
    # the upstream stage's _stats.json, which the manifest and the tokenizer's meta record
    (r"shards/manifest\.json|tokenizer/tokenizer_meta\.json",
     {("upstream", "started_at"): TEXT, ("upstream", "duration_s"): NUMBER}),
]
# demo only (each side writes its own dump, see the docstring): in _build.json the dump's mtime in the links
# stage's `inputs` ([path, size, mtime]) and the fingerprints hashed from it, every stage's `fingerprint` and
# `upstream` (the previous stage's fingerprint)
DUMP_MTIME_VOLATILE = (r"[^/]+/_build\.json",
                       {("fingerprint",): TEXT, ("upstream",): TEXT, ("inputs", "*", 2): NUMBER})
WARC_VOLATILE = {"WARC-Date", "WARC-Record-ID", "WARC-Concurrent-To", "WARC-Block-Digest"}  # record headers
HTTP_VOLATILE = {"Date"}                                   # the response's HTTP header: the server's clock
FETCH_LOG_VOLATILE = {"elapsed_s", "fetched_at"}           # columns of fetch/log-*.parquet
FETCH_LOG = re.compile(r"fetch/log-[^/]*\.parquet")      # the only Parquet files whose rows are normalised,
ERRORS = re.compile(r"[^/]+/errors-[^/]*\.parquet")      # every other is compared byte for byte
ERRORS_DETAIL_OFFSET = re.compile(r"(\.warc\.gz) @ \d+")  # "(FILE.warc.gz @ OFFSET)" in errors-*.parquet detail


# ---------------------------------------------------------------------------------------------------------
# The two sides

class Side:
    """One side's code: a directory whose `webtext` package the runs import."""

    def __init__(self, label: str, spec: str, scratch: Path):
        self.label, self.spec, self.worktree = label, spec, None
        if Path(spec).is_dir() and (Path(spec) / "webtext" / "cli.py").exists():
            self.tree = Path(spec).resolve()
            self.what = f"directory {self.tree}"
        else:
            sha = git("rev-parse", "--verify", f"{spec}^{{commit}}").strip()
            self.tree = self.worktree = scratch / f"tree-{label}"
            git("worktree", "add", "--detach", str(self.tree), sha)
            self.what = f"{spec} = {sha[:10]} (worktree {self.tree})"
        self.env = dict(os.environ, PYTHONPATH=str(self.tree))

    def check_import(self, cwd: Path) -> None:
        """The package a run of this side imports must be this tree's, and have webtext.cli.main."""
        out = subprocess.run([PYTHON, "-c", "import webtext, webtext.cli as c; assert callable(c.main); "
                              "print(webtext.__file__)"], cwd=cwd, env=self.env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{self.label}: cannot import webtext.cli.main from {self.tree}:\n{out.stderr}")
        where = Path(out.stdout.strip()).resolve()
        print(f"{self.label:6}: {self.what}\n        webtext.__file__ = {where}")
        if where != self.tree / "webtext" / "__init__.py":
            raise SystemExit(f"{self.label}: a run imports {where}, not {self.tree}/webtext")

    def webtext(self, argv: list[str], cwd: Path, log: Path) -> float:
        """`webtext ARGV` with this side's code, in a new process; its output goes to `log`. The seconds."""
        start = time.perf_counter()
        with open(log, "wb") as out:
            status = subprocess.run([PYTHON, "-m", "webtext.cli", *argv], cwd=cwd, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        if status:
            raise SystemExit(f"{self.label}: `webtext {' '.join(argv)}` failed ({status}):\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        return time.perf_counter() - start

    def remove(self) -> None:
        if self.worktree is not None:
            git("worktree", "remove", "--force", str(self.worktree))


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout


# ---------------------------------------------------------------------------------------------------------
# Scenario 1: the e2e web (as bench/e2e.py, run as `webtext build --job FILE`)

def _load_webserver(tree: Path):
    """tests/support_webserver.py of `tree`, serving the pages of this checkout's ../shared (a worktree in
    the scratch directory has no ../shared of its own)."""
    if "support_webserver" in sys.modules:
        return sys.modules["support_webserver"]
    spec = importlib.util.spec_from_file_location("support_webserver", tree / "tests" / "support_webserver.py")
    module = sys.modules["support_webserver"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.PAGES_DIR = PAGES_DIR
    return module


def _serve(tree: Path, pages: int, conn) -> None:
    web = _load_webserver(tree).LoopbackWeb(pages=pages, bombs=False).warm().start()
    conn.send(web.port)
    conn.recv()  # until both sides are done
    web.close()


def run_e2e(sides: list[Side], scratch: Path, args) -> dict[str, Path]:
    after_tree = sides[-1].tree
    module = _load_webserver(after_tree)
    n = args.pages or len(module.page_files())
    conn, child_conn = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(after_tree, n, child_conn),
                                                         daemon=True)
    server.start()
    try:
        web = module.LoopbackWeb(pages=n, bombs=False)
        web.port = conn.recv()
        urls = [web.url(f"host{i % HOSTS}.test", web.page_path(i)) for i in range(n)]
        urls += [web.url(f"host{(i + 1) % HOSTS}.test", web.page_path(i)) for i in range(args.duplicates)]
        inputs = scratch / "e2e-inputs"
        inputs.mkdir()
        write_dump(inputs / "RS_bench.zst", urls)
        root = scratch / "e2e-out"  # the same path for both sides
        (inputs / "job.toml").write_text(toml_of(job_for(root, inputs / "RS_bench.zst", web.address, args.workers)))
        print(f"\n== e2e: {len(urls)} URLs ({n} real pages + {args.duplicates} duplicates) at "
              f"{web.address}:{web.port}, --workers {args.workers}")
        outputs = {}
        for side in sides:
            seconds = side.webtext(["build", "--job", str(inputs / "job.toml")], inputs,
                                   scratch / f"e2e-{side.label}.log")
            outputs[side.label] = scratch / f"e2e-{side.label}"
            root.rename(outputs[side.label])
            print(f"   {side.label}: webtext build {seconds:.1f} s")
    finally:
        conn.send("stop")
        server.join(10)
    return outputs


# ---------------------------------------------------------------------------------------------------------
# Scenario 2: `webtext demo`'s sample

DEMO_PORT = 8765  # webtext demo's DEMO_PORT, in both layouts; taken only when free


def _wait_for_port(port: int, timeout: float) -> float | None:
    """Wait until 127.0.0.1:`port` can be bound as the demo's probe binds it (without SO_REUSEADDR, so the
    connections of a demo that just ended, in TIME_WAIT for up to a minute, keep it taken): the seconds
    waited, None if it stayed taken."""
    start = time.monotonic()
    while True:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return time.monotonic() - start
            except OSError:
                if time.monotonic() - start > timeout:
                    return None
        time.sleep(1)


def run_demo(sides: list[Side], scratch: Path, args) -> dict[str, Path]:
    root = scratch / "demo-out"
    print(f"\n== demo: webtext demo --seed {args.seed} --train-seconds {args.train_seconds:g}")
    outputs, ports = {}, {}
    for side in sides:
        waited = _wait_for_port(DEMO_PORT, timeout=150)
        if waited is None:
            raise SystemExit(f"port {DEMO_PORT} stays taken (another demo?): the demo would pick a random port, "
                             "and every URL in its outputs would differ. Try again later.")
        if waited >= 1:
            print(f"   (waited {waited:.0f} s for port {DEMO_PORT} to be free)")
        log = scratch / f"demo-{side.label}.log"
        jobs = side.tree / "jobs"  # named, not left to the default: 9eb4416's demo looks under webtext/jobs/
        seconds = side.webtext(["demo", "--output", str(root), "--seed", str(args.seed),
                                "--job", str(jobs / "sample-local.toml"), "--train-config",
                                str(jobs / "train-demo.toml"), "--train-seconds", str(args.train_seconds)],
                               scratch, log)
        found = re.search(r"at 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        ports[side.label] = int(found.group(1)) if found else None
        outputs[side.label] = scratch / f"demo-{side.label}"
        root.rename(outputs[side.label])
        shutil.rmtree(outputs[side.label] / "run-demo", ignore_errors=True)  # the training run: not compared
        print(f"   {side.label}: webtext demo {seconds:.1f} s (sample web on port {ports[side.label]})")
    if len(set(ports.values())) != 1 or None in ports.values():
        raise SystemExit(f"the demo's sample web ran on different ports {ports}: outputs not comparable")
    return outputs


# ---------------------------------------------------------------------------------------------------------
# Comparison

def _first_byte(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


_JSON_LINE = re.compile(r'( *)(?:"((?:[^"\\]|\\.)*)": )?(.*?)(,?)')  # a line as orjson's OPT_INDENT_2 writes


def _json_places(rel: str, dump_mtime: bool) -> dict[tuple, str]:
    """The places masked in the JSON file at `rel` (JSON_VOLATILE; DUMP_MTIME_VOLATILE too if `dump_mtime`)."""
    places: dict[tuple, str] = {}
    for pattern, found in JSON_VOLATILE + ([DUMP_MTIME_VOLATILE] if dump_mtime else []):
        if re.fullmatch(pattern, rel):
            places.update(found)
    return places


def _mask_json(text: str, places: dict[tuple, str]) -> tuple[list[str], dict[str, list[str]]]:
    """The lines of a JSON file as written with indent 2 (every key on a line of its own), each value at one of
    `places` replaced by `#` when it is of the place's kind; and the values masked, by place. A file written
    another way has nothing masked (so any difference in it shows)."""
    lines, masked, path = [], collections.defaultdict(list), []
    for line in text.split("\n"):
        m = _JSON_LINE.fullmatch(line)
        if m is None or len(m.group(1)) % 2 or re.fullmatch(r" *[]}],?", line):  # a closing line: no value
            lines.append(line)
            continue
        depth = len(m.group(1)) // 2
        if depth == 0:
            path = []
        else:  # a key of an object, or the next item of a list (its index)
            key = m.group(2)
            if key is None:
                key = path[depth - 1] + 1 if len(path) >= depth and isinstance(path[depth - 1], int) else 0
            path = path[:depth - 1] + [None] * (depth - 1 - len(path)) + [key]
        for place, kind in places.items():
            if (len(place) == len(path) and all(p in ("*", q) for p, q in zip(place, path, strict=True))
                    and re.fullmatch(kind, m.group(3))):
                masked[".".join(map(str, place))].append(m.group(3))
                line = line[:m.start(3)] + "#" + m.group(4)
                break
        lines.append(line)
    return lines, masked


def compare_json(a: Path, b: Path, rel: str, dump_mtime: bool = False) -> tuple[str | None, str]:
    """Called when the bytes differ: the raw texts with the values at the file's volatile places masked."""
    places = _json_places(rel, dump_mtime)
    try:
        (la, va), (lb, vb) = (_mask_json(p.read_bytes().decode("utf-8"), places) for p in (a, b))
    except UnicodeDecodeError:
        return "not UTF-8 (bytes differ)", ""
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return f"line {i + 1}: {x!r:.70} vs {y!r:.70}", ""
    if len(la) != len(lb):
        return f"{len(la)} vs {len(lb)} lines", ""
    differing = [place for place in va if va[place] != vb[place]]
    if not differing:  # cannot happen (same masked lines, same masked values: same bytes), but never say equal
        return "bytes differ, masked texts equal", ""
    return None, "the values of " + ", ".join(differing) + " masked"


def _mask_durations(text: str) -> list[str]:
    """report.md's lines, the seconds column of its "## Durations" table masked."""
    lines, section = [], None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line.strip()
        elif section == "## Durations" and line.startswith("|"):
            cells = line.split("|")
            if len(cells) > 3 and re.fullmatch(r" *[\d.]+ *", cells[2]):
                cells[2] = " # "
                line = "|".join(cells)
        lines.append(line)
    return lines


def compare_report_md(a: Path, b: Path) -> tuple[str | None, str]:
    la, lb = (_mask_durations(p.read_text()) for p in (a, b))
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return f"line {i + 1}: {x!r:.70} vs {y!r:.70}", ""
    return (f"{len(la)} vs {len(lb)} lines" if len(la) != len(lb) else None), "the Durations table's seconds masked"


# -- WARC ---------------------------------------------------------------------------------------------------

def _warc_records(data: bytes) -> list[tuple[list[tuple[str, str]], bytes]]:
    """(WARC headers, block) of every record of a .warc.gz (one or more gzip members)."""
    raw, rest = [], data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        raw.append(d.decompress(rest))
        rest = d.unused_data
    raw = b"".join(raw)
    records, pos = [], 0
    while pos < len(raw):
        end = raw.index(b"\r\n\r\n", pos)
        lines = raw[pos:end].decode("utf-8").split("\r\n")
        headers = [("", lines[0])] + [tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:]]
        length = int(next(v for k, v in headers if k.lower() == "content-length"))
        records.append((headers, raw[end + 4:end + 4 + length]))
        pos = end + 4 + length + 4  # a block is followed by \r\n\r\n
    return records


def _header(headers, name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)


def _check_warc(records) -> str | None:
    """What is wrong inside one side's WARC file: a block digest that does not match its block, or a request
    whose WARC-Concurrent-To names no response of the file (the fields the comparison leaves out)."""
    responses = {_header(h, "WARC-Record-ID") for h, _ in records if _header(h, "WARC-Type") == "response"}
    for i, (headers, block) in enumerate(records):
        digest = _header(headers, "WARC-Block-Digest")
        if digest:
            algo, _, value = digest.partition(":")
            if base64.b32encode(hashlib.new(algo.replace("-", ""), block).digest()).decode() != value:
                return f"record {i}: WARC-Block-Digest does not match its block"
        if _header(headers, "WARC-Type") == "request" and _header(headers, "WARC-Concurrent-To") not in responses:
            return f"record {i}: a request whose WARC-Concurrent-To names no response"
    return None


def _normalised_record(record) -> tuple:
    headers, block = record
    head, sep, body = block.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/"):  # the response's HTTP headers, without the server's clock
        head = b"\r\n".join(line for line in head.split(b"\r\n")
                            if line.split(b":", 1)[0].strip().decode("latin-1") not in HTTP_VOLATILE)
    return tuple((k, v) for k, v in headers if k not in WARC_VOLATILE), head + sep + body


def compare_warc(a: Path, b: Path) -> tuple[str | None, str]:
    ra, rb = _warc_records(a.read_bytes()), _warc_records(b.read_bytes())
    for side, records in (("before", ra), ("after", rb)):
        if problem := _check_warc(records):
            return f"{side}: {problem}", ""
    na, nb = [_normalised_record(r) for r in ra], [_normalised_record(r) for r in rb]
    how = (f"{len(ra)} records without {', '.join(sorted(WARC_VOLATILE))} and the HTTP "
           f"{', '.join(sorted(HTTP_VOLATILE))}; block digests and request/response pairs checked")
    if na == nb:
        return None, how
    if sorted(na) == sorted(nb):  # the fetch threads of a group append their exchanges in the order they finish
        return None, how + "; records in another order"
    only_a = list((collections.Counter(na) - collections.Counter(nb)).elements())
    only_b = list((collections.Counter(nb) - collections.Counter(na)).elements())
    if not only_a:
        return f"{len(ra)} vs {len(rb)} records", ""
    headers, block = only_a[0]
    what = f"{_header(headers, 'WARC-Type')} {_header(headers, 'WARC-Target-URI')}"
    twin = next((r for r in only_b if _header(r[0], "WARC-Type") == _header(headers, "WARC-Type")
                 and _header(r[0], "WARC-Target-URI") == _header(headers, "WARC-Target-URI")), None)
    if twin is None:
        return f"{len(ra)} vs {len(rb)} records; the {what} record is only in before", ""
    if twin[0] != headers:
        x, y = next((x, y) for x, y in zip(headers + ((),), twin[0] + ((),), strict=False) if x != y)
        return f"the {what} record: WARC header {x} vs {y}", ""
    return f"the {what} record: block differs at byte {_first_byte(block, twin[1])}", ""


# -- Parquet ------------------------------------------------------------------------------------------------

def _record_at(stage_dir: Path, warc_file: str, offset: int, length: int) -> tuple[str | None, str | None]:
    """(target URI, payload digest) of the response record that a fetch log row points at."""
    with open(stage_dir / warc_file, "rb") as f:
        f.seek(offset)
        records = _warc_records(f.read(length))
    headers = next((h for h, _ in records if _header(h, "WARC-Type") == "response"), [])
    return _header(headers, "WARC-Target-URI"), _header(headers, "WARC-Payload-Digest")


def _parquet_rows(path: Path, rel: str) -> tuple[list[dict], str]:
    """The rows of a fetch log or errors Parquet file, normalised as its kind needs (FETCH_LOG_VOLATILE, the
    WARC pointers, ERRORS_DETAIL_OFFSET), and what was normalised."""
    rows = pq.read_table(path).to_pylist()
    if FETCH_LOG.fullmatch(rel):
        for row in rows:
            for key in FETCH_LOG_VOLATILE:
                row.pop(key)
            offset, length = row.pop("warc_offset"), row.pop("warc_length")
            if row["warc_file"] is not None:
                uri, digest = _record_at(path.parent, row["warc_file"], offset, length)
                row["(the WARC record it points at)"] = (
                    "resolves" if (uri, digest) == (row["final_url"], row["payload_digest"]) else
                    f"points at {uri} {digest} (at {offset}+{length}), not at {row['final_url']}")
        return rows, (f"without {', '.join(sorted(FETCH_LOG_VOLATILE))}; warc_offset/warc_length replaced by "
                      "whether they point at the row's final_url and payload_digest in its WARC file")
    for row in rows:
        if row.get("detail"):
            row["detail"] = ERRORS_DETAIL_OFFSET.sub(r"\1 @ #", row["detail"])
    return rows, "the WARC offsets in `detail` masked"


def _chunk(chunk, volatile: bool) -> dict:
    """What must match in a column chunk's metadata: all but its offsets and sizes (which move with the
    volatile values), and but the min/max statistics of a volatile column."""
    stats = chunk.statistics
    return {"path": chunk.path_in_schema, "type": chunk.physical_type, "values": chunk.num_values,
            "compression": chunk.compression, "encodings": chunk.encodings,
            "dictionary page": chunk.has_dictionary_page,
            "column index": chunk.has_column_index, "offset index": chunk.has_offset_index,
            "bloom filter": chunk.bloom_filter_offset is not None, "statistics": chunk.is_stats_set,
            **({} if stats is None else {
                "stats types": (stats.physical_type, str(stats.logical_type), stats.converted_type),
                "null count": stats.null_count if stats.has_null_count else None,
                "distinct count": stats.distinct_count if stats.has_distinct_count else None,
                "min/max": None if volatile else (stats.has_min_max, stats.min, stats.max) if stats.has_min_max
                else False})}


def _chunk_bytes(data: bytes, chunk) -> bytes:
    """A column chunk's pages (its dictionary page and data pages, headers included) in a Parquet file."""
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    return data[start:start + chunk.total_compressed_size]


def _parquet_layout_difference(a: Path, b: Path, volatile: set[str]) -> str | None:
    """How two Parquet files differ but in what the volatile columns move: writer, format, Parquet and Arrow
    schema, key-value metadata, rows per row group, each column chunk's metadata (`_chunk`), and the bytes of
    every chunk of a column not in `volatile` (its pages: values, encodings, page headers and statistics)."""
    ma, mb = pq.read_metadata(a), pq.read_metadata(b)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    for what, x, y in (("created_by", ma.created_by, mb.created_by),
                       ("format_version", ma.format_version, mb.format_version)):
        if x != y:
            return f"{what} {x} vs {y}"
    if not ma.schema.equals(mb.schema):
        return "Parquet schemas differ"
    if not ma.schema.to_arrow_schema().equals(mb.schema.to_arrow_schema(), check_metadata=True):
        return "Arrow schemas differ"
    if ma.metadata != mb.metadata:
        xa, xb = ma.metadata or {}, mb.metadata or {}
        key = next(k for k in sorted(xa.keys() | xb.keys()) if xa.get(k) != xb.get(k))
        return f"footer key-value metadata {key.decode(errors='replace')!r} differs"
    if (ma.num_rows, ma.num_row_groups) != (mb.num_rows, mb.num_row_groups):
        return f"rows, row groups {ma.num_rows}, {ma.num_row_groups} vs {mb.num_rows}, {mb.num_row_groups}"
    for g in range(ma.num_row_groups):
        ga, gb = ma.row_group(g), mb.row_group(g)
        if (ga.num_rows, ga.num_columns) != (gb.num_rows, gb.num_columns):
            return f"row group {g}: rows, columns {ga.num_rows}, {ga.num_columns} vs {gb.num_rows}, {gb.num_columns}"
        if ga.sorting_columns != gb.sorting_columns:
            return f"row group {g}: sorting columns differ"
        for c in range(ga.num_columns):
            ca, cb = ga.column(c), gb.column(c)
            is_volatile = ca.path_in_schema.split(".")[0] in volatile
            x, y = _chunk(ca, is_volatile), _chunk(cb, is_volatile)
            if x != y:
                key = next(k for k in list(x) + list(y) if x.get(k) != y.get(k))
                return (f"row group {g}, column chunk {ca.path_in_schema}: {key} {x.get(key)!r:.50} vs "
                        f"{y.get(key)!r:.50}")
            if not is_volatile and (pa_ := _chunk_bytes(data_a, ca)) != (pb_ := _chunk_bytes(data_b, cb)):
                return (f"row group {g}, column chunk {ca.path_in_schema}: its pages differ at byte "
                        f"{_first_byte(pa_, pb_)} (sizes {len(pa_)}, {len(pb_)})")
    return None


def compare_parquet(a: Path, b: Path, rel: str) -> tuple[str | None, str]:
    """A fetch log or errors Parquet file whose bytes differ: its footer (`_parquet_layout_difference`), then
    its rows normalised (`_parquet_rows`) in order."""
    volatile = FETCH_LOG_VOLATILE | {"warc_offset", "warc_length"} if FETCH_LOG.fullmatch(rel) else {"detail"}
    if diff := _parquet_layout_difference(a, b, volatile):
        return diff, ""
    (xa, how), (xb, _) = _parquet_rows(a, rel), _parquet_rows(b, rel)
    for i, (p, q) in enumerate(zip(xa, xb, strict=True)):
        if p != q:
            key = next(k for k in list(p) + list(q) if p.get(k) != q.get(k))
            return f"row {i}, column {key}: {p.get(key)!r:.60} vs {q.get(key)!r:.60}", ""
    return None, (how + f"; footers equal but for sizes, offsets and the min/max of {', '.join(sorted(volatile))}; "
                  "the other columns' chunks byte for byte")


# -- A tree ---------------------------------------------------------------------------------------------------

def compare_file(before: Path, after: Path, rel: str, dump_mtime: bool = False) -> tuple[str, str]:
    """(verdict, detail) for one file present on both sides. `dump_mtime`: the sides wrote their inputs at
    different times (the demo), so _build.json's DUMP_MTIME_VOLATILE are masked too."""
    a, b = before / rel, after / rel
    if a.read_bytes() == b.read_bytes():
        return "identical", ""
    if rel.endswith(".json"):
        diff, how = compare_json(a, b, rel, dump_mtime)
    elif rel == "report.md":
        diff, how = compare_report_md(a, b)
    elif re.fullmatch(r"fetch/warc/[^/]+\.warc\.gz", rel):
        diff, how = compare_warc(a, b)
    elif FETCH_LOG.fullmatch(rel) or ERRORS.fullmatch(rel):
        diff, how = compare_parquet(a, b, rel)
    else:
        data_a, data_b = a.read_bytes(), b.read_bytes()
        return "DIFFERENT", (f"first differing byte at {_first_byte(data_a, data_b)} "
                             f"(sizes {len(data_a)}, {len(data_b)})")
    return ("DIFFERENT", diff) if diff else ("identical after normalising", how)


def compare_trees(before: Path, after: Path, dump_mtime: bool = False) -> int:
    """Print a line for every file under either root; the number of files that differ. `dump_mtime`: see
    `compare_file`."""
    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    fa, fb = files(before), files(after)
    differ, counts = 0, collections.Counter()
    width = max(map(len, fa | fb), default=10)
    for rel in sorted(fa | fb):
        if rel in fa and rel in fb:
            verdict, detail = compare_file(before, after, rel, dump_mtime)
        else:
            verdict, detail = "DIFFERENT", f"only in {'before' if rel in fa else 'after'}"
        differ += verdict == "DIFFERENT"
        counts[verdict] += 1
        print(f"  {rel:<{width}}  {verdict}{': ' + detail if detail else ''}")
    print(f"  {len(fa | fb)} files: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    return differ


# ---------------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a revision")
    parser.add_argument("--after", default=str(REPO), help="a revision or a directory (default: this tree)")
    parser.add_argument("--scenarios", default="e2e,demo", help="comma-separated: e2e, demo (default: both)")
    parser.add_argument("--pages", type=int, default=200, help="real pages of the e2e web (0: all; default 200)")
    parser.add_argument("--duplicates", type=int, default=20, help="e2e pages also served under a second URL")
    parser.add_argument("--workers", type=int, default=2, help="the e2e build's --workers")
    parser.add_argument("--seed", type=int, default=0, help="the demo's --seed")
    parser.add_argument("--train-seconds", type=float, default=1.0, help="the demo's training run (not compared)")
    parser.add_argument("--keep", type=Path, help="copy both sides' outputs here instead of deleting them")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    if not set(scenarios) <= {"e2e", "demo"}:
        parser.error("--scenarios takes e2e and/or demo")

    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="same-outputs-"))
    sides: list[Side] = []
    differ = 0
    try:
        for label, spec in (("before", args.before), ("after", args.after)):
            sides.append(Side(label, spec, scratch))
        for side in sides:
            side.check_import(scratch)
        outputs = {}
        if "e2e" in scenarios:
            outputs["e2e"] = run_e2e(sides, scratch, args)
        if "demo" in scenarios:
            outputs["demo"] = run_demo(sides, scratch, args)
        for name, out in outputs.items():
            print(f"\n== {name}: {out['before']} vs {out['after']}")
            differ += compare_trees(out["before"], out["after"], dump_mtime=name == "demo")
        if args.keep:
            shutil.copytree(scratch, args.keep, ignore=shutil.ignore_patterns("tree-*"), dirs_exist_ok=True)
    finally:
        for side in sides:
            side.remove()
        shutil.rmtree(scratch, ignore_errors=True)
        git("worktree", "prune")
    verdict = "nothing differs" if not differ else f"{differ} files DIFFER"
    print(f"\n{verdict} ({', '.join(scenarios)}; {time.perf_counter() - t0:.0f} s)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
