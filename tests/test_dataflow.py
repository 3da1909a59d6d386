"""Dataflow, offline: options are validated, the worker wheel holds what workers need (and no torch), and every
stage's graph constructs for DataflowRunner and serialises, without submitting anything or writing output."""

from __future__ import annotations

import argparse
import glob
import os
import zipfile

import pytest
from conftest import shared_path

from webtext import build
from webtext.model.config import load_job as load_train_job
from webtext.runtime import beam as beam_options
from webtext.stages import STAGES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATAFLOW = {"runner": "dataflow", "project": "my-project-123", "region": "us-central1",
            "temp_location": "gs://my-bucket/tmp"}


def _args(**kw) -> argparse.Namespace:
    base = dict(runner="dataflow", workers=0, project="my-project-123", region="us-central1",
                temp_location="gs://my-bucket/tmp", job_name=None, max_num_workers=None, machine_type=None,
                beam_option=["--sdk_location=container"])
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("change, message", [
    ({"project": None}, "--project"),
    ({"region": None}, "--region"),
    ({"temp_location": "/tmp/local"}, "must be a gs:// path"),
    ({"max_num_workers": 0}, "at least 1"),
])
def test_dataflow_options_are_checked_before_anything_is_built(change, message):
    with pytest.raises(beam_options.RunnerArgumentError, match=message):
        beam_options.pipeline_options(_args(**change), "links")


def test_dataflow_options_stage_the_package_wheel():
    options = beam_options.pipeline_options(_args(max_num_workers=50, machine_type="n2-standard-4"), "links")
    flat = options.get_all_options(drop_default=True)
    assert flat["runner"] == "DataflowRunner" and flat["max_num_workers"] == 50
    assert flat["machine_type"] == "n2-standard-4" and flat["job_name"] == "webtext-links"
    assert flat["extra_packages"][0].endswith(".whl") and os.path.exists(flat["extra_packages"][0])


def test_worker_wheel_holds_every_pipeline_module_and_no_torch(tmp_path):
    wheel = beam_options.worker_wheel()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for module in glob.glob(os.path.join(REPO, "webtext", "pipeline", "*.py")) + \
            glob.glob(os.path.join(REPO, "webtext", "tokenize", "*.py")):
        assert os.path.relpath(module, REPO) in names
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("apache-beam") for r in core) and any(r.startswith("trafilatura") for r in core)
    assert not any(r.startswith("torch") for r in core), "workers must not install torch"
    assert any(r.startswith("torch") and 'extra == "train"' in r for r in requires)


def test_every_job_file_names_only_real_fields():
    for path in glob.glob(os.path.join(REPO, "jobs", "*.toml")):
        if os.path.basename(path).startswith("train-"):
            load_train_job(path)
            continue
        job = build.load_job(path)
        for stage in build.STAGE_NAMES:
            build.stage_argv(stage, job.get(stage, {}), job["job"]["output"], job["job"])


def test_unknown_job_field_is_an_error_naming_the_valid_ones():
    with pytest.raises(build.JobError, match="unknown field 'min_karam'.*min_karma"):
        build.stage_argv("links", {"min_karam": 3, "input": ["x"]}, "/tmp/out", {})


def test_whole_job_graph_constructs_for_dataflow_and_serialises(tmp_path):
    dumps = shared_path("reddit")
    root = tmp_path / "out"
    job = build.load_job(os.path.join(REPO, "jobs", "webtext-dataflow.toml"))
    job["job"] = {**job["job"], "output": str(root)}
    job["links"] = {**job["links"], "input": [str(dumps / "RS_*.xz")]}
    summaries = build.dry_run(job, DATAFLOW, log=lambda m: None)
    beam_stages = [s for s in summaries if s["beam"]]
    assert [s["stage"] for s in beam_stages] == [s.name for s in STAGES if s.beam]
    for s in beam_stages:
        assert s["transforms"] > 5 and s["bytes"] > 1000 and s["project"] == "my-project-123"
    assert not root.exists(), "a dry run must not write anything"
