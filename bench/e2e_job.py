"""The input of the end-to-end runs (bench/e2e.py, bench/same_outputs.py): a Reddit dump linking to a loopback
web and the job file that builds it. Imports nothing of webtext, so a script can drive any revision's code."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import zstandard


def write_dump(path: Path, urls: list[str]) -> None:
    """One submission per URL, as a .zst with a 2^31 window like the published dumps."""
    lines = [orjson.dumps({"id": f"b{i:06x}", "url": u, "score": 5, "is_self": False, "over_18": False,
                           "subreddit": "bench", "created_utc": 1_420_070_400 + i, "title": "t"})
             for i, u in enumerate(urls)]
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31)
    path.write_bytes(zstandard.ZstdCompressor(compression_params=params).compress(b"\n".join(lines) + b"\n"))


def job_for(root: Path, dump: Path, address: str, workers: int) -> dict:
    return {
        "job": {"output": str(root), "runner": "direct", "workers": workers},
        "links": {"input": [str(dump)], "before": "none"},
        "fetch": {"allow_network": [f"{address}/32"], "resolve": [f"*.test={address}"], "host_delay": 0,
                  "timeout": 10, "retries": 0},
        "extract": {},
        "dedup": {},
        "tokenizer": {"vocab_size": 4096},
        "encode": {"val_fraction": 0.01},
    }


def toml_of(job: dict) -> str:
    """The job as a TOML job file (its values are strings, numbers and lists of strings)."""
    def value(v):
        return json.dumps(v) if isinstance(v, (str, list)) else str(v)

    return "".join(f"[{table}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in fields.items()) + "\n"
                   for table, fields in job.items())
