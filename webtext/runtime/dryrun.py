"""Check a pipeline for Dataflow without submitting it: options validated by Beam's own Dataflow validator,
the graph serialised to Beam's portable representation (which pickles every DoFn, as submission would).

Used by `webtext build --dry-run` and by the offline Dataflow tests; nothing here talks to Google Cloud.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator


class DataflowCheckError(ValueError):
    pass


def check_for_dataflow(pipeline: beam.Pipeline, options: PipelineOptions) -> dict:
    """Validate `options` as Dataflow would and serialise `pipeline`; returns a summary of the graph."""
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    gcp = options.view_as(GoogleCloudOptions)
    if gcp.temp_location and not gcp.staging_location:
        gcp.staging_location = gcp.temp_location.rstrip("/") + "/staging"
    problems = PipelineOptionsValidator(options, DataflowRunner()).validate()
    if problems:
        raise DataflowCheckError("; ".join(problems))
    proto = pipeline.to_runner_api()
    blob = proto.SerializeToString()
    names = sorted(t.unique_name for t in proto.components.transforms.values() if not t.subtransforms)
    return {"transforms": len(proto.components.transforms), "leaf_transforms": names,
            "bytes": len(blob), "job_name": gcp.job_name, "project": gcp.project, "region": gcp.region}
