"""Stages 1-5 of the corpus: Apache Beam pipelines (DirectRunner locally, Dataflow at scale, same code).

Shared pieces: `beam` (options, running, metrics), `datasets` (the on-disk layout of every stage's output:
sorted, sharded Parquet written deterministically), `errors` (the errors output), `stats` (counters and
`_stats.json`), `fs` (one file-system layer for local paths and gs://).
"""
