"""The build report, `report.md` and `report.json` in the output root: the data card of the corpus.

Every figure is read back from the stages' outputs (dataset row counts from the Parquet footers, counters from
each `_stats.json`, token totals from the shard manifest), never carried over from the run that made them.
"""

from __future__ import annotations

import collections

from webtext.encode import shards
from webtext.runtime import datasets, fs, stats
from webtext.stages import STAGES


def _top(directory: str, name: str, column: str, k: int = 10, where=None) -> list[list]:
    try:
        table = datasets.read_table(directory, name, columns=[column] + ([where[0]] if where else []))
    except (FileNotFoundError, KeyError, ValueError):
        return []
    rows = table.to_pylist()
    if where:
        rows = [r for r in rows if where[1](r[where[0]])]
    counts = collections.Counter(r[column] for r in rows)
    return [[value, n] for value, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:k]]


def collect(root: str, timings: dict | None = None) -> dict:
    timings = timings or {}
    report: dict = {"root": root, "stages": {}, "funnel": [], "drops": {}, "top_hosts": {}}
    dirs = {spec.name: fs.join(root, spec.output) for spec in STAGES}
    for spec in STAGES:
        stage, directory = spec.name, dirs[spec.name]
        st = stats.read_stats(directory) or {}
        entry = {"counters": st.get("counters", {}), "seconds": (timings.get(stage) or {}).get("seconds",
                                                                                            st.get("duration_s")),
                 "skipped": (timings.get(stage) or {}).get("skipped", False), "rows": {}}
        for name in spec.datasets:
            entry["rows"][name] = datasets.count_rows(directory, name)
        report["stages"][stage] = entry
        report["drops"][stage] = {k: v for k, v in entry["counters"].items() if v}

    manifest_path = fs.join(dirs["encode"], shards.MANIFEST)
    manifest = fs.read_json(manifest_path) if fs.exists(manifest_path) else None
    log_rows = report["stages"]["fetch"]["rows"].get("log")
    fetched_ok = None
    if log_rows is not None:
        log = datasets.read_table(dirs["fetch"], "log", columns=["error", "bytes"]).to_pylist()
        fetched_ok = sum(1 for r in log if r["error"] is None)
        report["bytes_fetched"] = sum(r["bytes"] or 0 for r in log)
        report["fetch_errors"] = dict(sorted(collections.Counter(r["error"] for r in log
                                                                 if r["error"]).items()))
    links_counters = report["stages"]["links"]["counters"]
    submissions = next((links_counters[k] for k in ("lines", "lines_read", "submissions", "read")
                        if k in links_counters), None)
    funnel = [
        ("submissions read", submissions),
        ("links (deduplicated URLs)", report["stages"]["links"]["rows"].get("links")),
        ("links attempted", log_rows),
        ("pages fetched", fetched_ok),
        ("documents extracted", report["stages"]["extract"]["rows"].get("documents")),
        ("documents after dedup", report["stages"]["dedup"]["rows"].get("documents")),
    ]
    if manifest:
        for split in shards.SPLITS:
            info = manifest["splits"].get(split) or {}
            funnel.append((f"{split} documents", info.get("documents")))
            funnel.append((f"{split} tokens", info.get("tokens")))
        report["shards"] = {"tokens": manifest["totals"]["tokens"], "bytes": manifest["totals"]["bytes"],
                            "dtype": manifest["dtype"], "vocab_size": manifest["tokenizer"]["vocab_size"],
                            "tokenizer": manifest["tokenizer"]["fingerprint"]}
    report["funnel"] = [[name, value] for name, value in funnel if value is not None]
    report["top_hosts"]["links"] = _top(dirs["links"], "links", "host")
    report["top_hosts"]["documents"] = _top(dirs["dedup"], "documents", "host")
    return report


def to_markdown(report: dict) -> str:
    lines = [f"# webtext build report: `{report['root']}`", "", "## Funnel", "", "| step | count |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in report["funnel"]]
    if report.get("fetch_errors"):
        lines += ["", "## Fetch errors", "", "| class | links |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in report["fetch_errors"].items()]
    lines += ["", "## Counters by stage (drop reasons and totals)", ""]
    for stage, counters in report["drops"].items():
        if counters:
            lines.append(f"- **{stage}**: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()))
    for what, rows in report["top_hosts"].items():
        if rows:
            lines += ["", f"## Top hosts ({what})", "", "| host | count |", "|---|---:|"]
            lines += [f"| {h} | {n:,} |" for h, n in rows]
    if report.get("shards"):
        s = report["shards"]
        lines += ["", "## Shards", "", f"{s['tokens']:,} tokens, {s['bytes']:,} bytes, {s['dtype']}, "
                  f"vocabulary {s['vocab_size']:,}, tokenizer `{s['tokenizer']}`"]
    if report.get("bytes_fetched") is not None:
        lines += ["", f"Bytes fetched (decoded bodies): {report['bytes_fetched']:,}"]
    lines += ["", "## Durations", "", "| stage | seconds | |", "|---|---:|---|"]
    for stage, entry in report["stages"].items():
        if entry["seconds"] is not None:
            lines.append(f"| {stage} | {entry['seconds']:.1f} | {'skipped (up to date)' if entry['skipped'] else ''} |")
    return "\n".join(lines) + "\n"


def write_report(root: str, timings: dict | None = None) -> dict:
    report = collect(root, timings)
    markdown = to_markdown(report)
    fs.write_json(fs.join(root, "report.json"), report)
    fs.write_atomic(fs.join(root, "report.md"), markdown.encode("utf-8"))
    return {**report, "markdown": markdown}
