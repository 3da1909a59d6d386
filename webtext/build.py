"""Run every stage of a job file under one output root: links → fetch → extract → dedup → tokenizer → encode.

A job file (TOML, see jobs/) has a `[job]` table (output root, runner settings) and one table per stage whose
keys are that stage's command-line flags without the dashes (`min_karma = 3` is `webtext links --min-karma 3`),
so every field is documented by `webtext STAGE --help` and an unknown field is an error. The build wires each
stage's input to the previous stage's output under the root: ROOT/links, ROOT/fetch, ROOT/extract, ROOT/dedup,
ROOT/tokenizer, ROOT/shards.

A finished stage leaves `_build.json` with the fingerprint of its configuration and of everything upstream. A
stage whose fingerprint matches is skipped; a stage whose configuration changed is explained, its old output
removed, and it and every later stage rerun, so old and new output are never mixed. `--from STAGE` reruns from
a stage on, `--only STAGE` runs one stage. At the end `report.md` and `report.json` are written to the root.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
import time
import tomllib

import orjson

from webtext.runtime import fs
from webtext.stages import STAGES
from webtext.stages import stage as get_stage

EXAMPLE = """  webtext build --job jobs/sample-local.toml
  webtext build --job jobs/webtext-local.toml --from extract
  webtext build --job jobs/webtext-dataflow.toml --runner dataflow --project P --region us-central1 \\
      --temp-location gs://BUCKET/tmp --dry-run"""

STAGE_NAMES = [s.name for s in STAGES]
JOB_KEYS = {"name", "output", "runner", "workers", "project", "region", "temp_location", "max_num_workers",
            "machine_type", "description"}
BUILD_FILE = "_build.json"


class JobError(ValueError):
    """A job file that cannot be run as written."""


def load_job(path: str) -> dict:
    with open(path, "rb") as f:
        job = tomllib.load(f)
    unknown = set(job) - {"job", *STAGE_NAMES}
    if unknown:
        raise JobError(f"{path}: unknown table(s) {sorted(unknown)}; allowed: job, {', '.join(STAGE_NAMES)}")
    meta = job.get("job", {})
    bad = set(meta) - JOB_KEYS
    if bad:
        raise JobError(f"{path}: unknown [job] field(s) {sorted(bad)}; allowed: {sorted(JOB_KEYS)}")
    if "output" not in meta:
        raise JobError(f"{path}: [job] needs `output`, the root directory of every stage's output")
    return job


def _stage_parser(stage: str) -> argparse.ArgumentParser:
    from webtext.cli import command_parser

    parser, _ = command_parser(stage)
    for word in get_stage(stage).subcommand:  # a command with its own subcommands (tokenizer train)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def stage_argv(stage: str, settings: dict, root: str, job_meta: dict) -> list[str]:
    """The command line a stage runs with: its wiring under the root, then its table's fields as flags
    (checked against the stage's own parser, so an unknown field is an error naming the valid ones)."""
    parser = _stage_parser(stage)
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    spec = get_stage(stage)
    wiring = {flag: get_stage(upstream).output for flag, upstream in spec.reads.items()}
    wiring["--output"] = spec.output
    argv = list(spec.subcommand)
    for flag, directory in wiring.items():
        argv += [flag, fs.join(root, directory)]
    wired = {flag.lstrip("-").replace("-", "_") for flag in wiring}
    runner = {k: job_meta[k] for k in ("runner", "workers", "project", "region", "temp_location",
                                       "max_num_workers", "machine_type") if k in job_meta}
    fields = {**(runner if spec.beam else {}), **settings}
    for key, value in fields.items():
        dest = key.replace("-", "_")
        if dest in wired:
            raise JobError(f"[{stage}] {key}: set by the build (stages read each other's output under the root)")
        action = actions.get(dest)
        if action is None:
            valid = sorted(d for d in actions if d not in wired and d != "help")
            raise JobError(f"[{stage}] unknown field {key!r}; valid fields: {', '.join(valid)}")
        flag = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        argv += _flag_values(flag, action, value)
    return argv


def _flag_values(flag: str, action: argparse.Action, value) -> list[str]:
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        wanted = isinstance(action, argparse._StoreTrueAction)
        return [flag] if bool(value) == wanted else []
    values = value if isinstance(value, list) else [value]
    values = [str(v) for v in values]
    if isinstance(action, argparse._AppendAction):
        return [x for v in values for x in (flag, v)]
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return [flag, *values]
    if len(values) != 1:
        raise JobError(f"{flag} takes one value, got {value!r}")
    return [flag, values[0]]


def input_identity(patterns: list[str]) -> list[list]:
    """(path, size, modification time) of every file the patterns match: a dump rewritten in place changes the
    links stage's fingerprint as a changed flag would. A pattern that matches nothing is left to the stage."""
    from apache_beam.io.filesystems import FileSystems

    found = []
    for pattern in patterns:
        try:
            metadata = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # noqa: BLE001 - no match, or a file system not installed: the stage reports it
            continue
        found += [[m.path, m.size_in_bytes, m.last_updated_in_seconds] for m in metadata]
    return sorted(found)


def fingerprint(stage: str, argv: list[str], upstream: str, inputs: list | None = None) -> str:
    """What a stage's output depends on: its command line without runner settings, its upstream, and for
    the first stage the identity of its input files."""
    runner_flags = {"--runner", "--workers", "--project", "--region", "--temp-location", "--max-num-workers",
                    "--machine-type", "--job-name"}
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in runner_flags:
            skip = True
            continue
        kept.append(item)
    blob = orjson.dumps({"stage": stage, "argv": kept, "upstream": upstream, "inputs": inputs or []})
    return hashlib.sha256(blob).hexdigest()[:16]


def _changes(old: list[str], new: list[str]) -> str:
    def pairs(argv):
        out, key = {}, None
        for item in argv:
            if item.startswith("--"):
                key = item
                out[key] = out.get(key, "")
            elif key:
                out[key] = (out[key] + " " + item).strip()
        return out

    a, b = pairs(old), pairs(new)
    diffs = [f"{k}: {a.get(k, '(default)')} -> {b.get(k, '(default)')}" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k)]
    return "; ".join(diffs) or "upstream output changed"


def run_stage(stage: str, argv: list[str]) -> None:
    from webtext.cli import command_parser

    parser, module = command_parser(stage)  # argv starts with any subcommand
    args = parser.parse_args(argv)
    status = int(module.main(args) or 0)
    if status:
        raise RuntimeError(f"stage {stage} failed with exit status {status}")


def build(job: dict, *, from_stage: str | None = None, only: str | None = None, runner_overrides: dict,
          log=print) -> dict:
    meta = {**job.get("job", {}), **{k: v for k, v in runner_overrides.items() if v is not None}}
    root = meta["output"]
    fs.makedirs(root)
    upstream = ""
    stages = STAGE_NAMES
    first = stages.index(from_stage) if from_stage else 0
    timings: dict[str, dict] = {}
    rerun_rest = False
    for i, stage in enumerate(stages):
        argv = stage_argv(stage, job.get(stage, {}), root, meta)
        inputs = input_identity(job.get(stage, {}).get("input", [])) if stage == "links" else None
        fp = fingerprint(stage, argv, upstream, inputs)
        out = fs.join(root, get_stage(stage).output)
        marker = fs.join(out, BUILD_FILE)
        previous = fs.read_json(marker) if fs.exists(marker) else None
        wanted = (only is None or only == stage) and i >= first
        if not wanted:
            if previous is None:
                if only is not None and i < stages.index(only):
                    raise JobError(f"--only {only}: upstream stage {stage} has no finished output in {out}")
            upstream = previous["fingerprint"] if previous else fp
            continue
        forced = from_stage is not None or only == stage
        if previous and previous["fingerprint"] == fp and not forced and not rerun_rest:
            log(f"[{stage}] up to date ({out}), skipped")
            timings[stage] = {"skipped": True, "seconds": previous.get("seconds")}
            upstream = fp
            continue
        if previous and previous["fingerprint"] != fp:
            what = ("input files changed" if previous.get("inputs", []) != (inputs or [])
                    else _changes(previous.get("argv", []), argv))
            log(f"[{stage}] configuration changed ({what}): "
                f"removing {out} and rerunning {stage} and every later stage")
            _remove_tree(out)
            rerun_rest = True
        elif previous and forced:
            log(f"[{stage}] rerun requested: removing {out}")
            _remove_tree(out)
            rerun_rest = True
        log(f"[{stage}] webtext {stage} {' '.join(argv)}")
        t0 = time.time()
        run_stage(stage, argv)
        seconds = round(time.time() - t0, 2)
        fs.write_json(marker, {"stage": stage, "fingerprint": fp, "argv": argv, "upstream": upstream,
                               "inputs": inputs or [], "seconds": seconds})
        timings[stage] = {"skipped": False, "seconds": seconds}
        log(f"[{stage}] done in {seconds:.1f}s")
        upstream = fp
    from webtext.report import write_report

    return write_report(root, timings)


def dry_run(job: dict, runner_overrides: dict, log=print) -> list[dict]:
    """Check a whole job without running or writing anything: every stage's flags parse, its pipeline graph
    constructs with the job's runner options and serialises (for Dataflow: validated by Beam's Dataflow
    options validator, every DoFn pickled, the package wheel built). Upstream outputs need not exist."""
    import apache_beam as beam

    from webtext.cli import command_parser
    from webtext.runtime.beam import pipeline_options
    from webtext.runtime.dryrun import check_for_dataflow

    meta = {**job.get("job", {}), **{k: v for k, v in runner_overrides.items() if v is not None}}
    summaries = []
    for stage in STAGE_NAMES:
        argv = stage_argv(stage, job.get(stage, {}), meta["output"], meta)
        parser, _ = command_parser(stage)
        args = parser.parse_args(argv)
        log(f"[{stage}] webtext {stage} {' '.join(argv)}")
        if not get_stage(stage).beam:
            summaries.append({"stage": stage, "beam": False})
            continue
        options = pipeline_options(args, stage)
        pipeline = beam.Pipeline(options=options)
        importlib.import_module(get_stage(stage).pipeline).graph(pipeline, args)
        if meta.get("runner", "direct") == "dataflow":
            summary = check_for_dataflow(pipeline, options)
        else:
            summary = {"transforms": len(pipeline.to_runner_api().components.transforms)}
        summaries.append({"stage": stage, "beam": True, **summary})
        log(f"[{stage}] graph of {summary['transforms']} transforms constructs and serialises")
    return summaries


def _remove_tree(path: str) -> None:
    if fs.is_remote(path):
        fs.delete(fs.glob_or_empty(fs.join(path, "**")))
    else:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", required=True, help="job file (TOML), e.g. jobs/sample-local.toml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--from", dest="from_stage", choices=STAGE_NAMES,
                       help="rerun this stage and every later one")
    group.add_argument("--only", choices=STAGE_NAMES, help="run only this stage (upstream must be finished)")
    parser.add_argument("--output", help="override the job's output root")
    parser.add_argument("--runner", help="override the job's runner (direct, dataflow)")
    parser.add_argument("--workers", type=int, help="override the job's local worker count")
    parser.add_argument("--project", help="Google Cloud project (dataflow)")
    parser.add_argument("--region", help="Google Cloud region (dataflow)")
    parser.add_argument("--temp-location", help="gs:// temp location (dataflow)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the job, print each stage's command line and construct the Dataflow "
                             "pipeline graphs without running or submitting anything")


def main(args: argparse.Namespace) -> int:
    try:
        job = load_job(args.job)
        overrides = {"output": args.output, "runner": args.runner, "workers": args.workers,
                     "project": args.project, "region": args.region, "temp_location": args.temp_location}
        if args.dry_run:
            for summary in dry_run(job, overrides, log=lambda m: print(m, file=sys.stderr, flush=True)):
                print(orjson.dumps(summary).decode())
            return 0
        report = build(job, from_stage=args.from_stage, only=args.only, runner_overrides=overrides,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    except JobError as e:
        print(f"webtext build: {e}", file=sys.stderr)
        return 2
    print(report["markdown"])
    return 0
