"""The stages, in pipeline order: the one list that the CLI, `webtext build`, the report and `inspect` read.

Each stage is a package, `webtext/<name>/`, laid out the same way:

    command.py    the command: EXAMPLE, add_arguments(parser), check(args), run(args, plan), funnel(stats)
                  (run by `webtext.runtime.stage.run_command`, the one way a stage starts, counts and ends)
    pipeline.py   its Beam graph: composite PTransforms and DoFns, and graph(p, args) for `build --dry-run`
    schema.py     what it writes: its dataset names and Arrow schemas, its error reasons
    task.py       the work its local processes run (imports no Beam: checked by import-linter in `make test`)
    *.py          its pure logic, named by topic (rules, urls, crawler, filters, minhash, bpe, shards, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    name: str                   # its command (`webtext NAME`) and its table in a job file
    summary: str                # one line for `webtext --help`
    output: str                 # its directory under a build root
    reads: dict[str, str]       # flag -> the stage whose output directory that flag names in a build
    datasets: tuple[str, ...]   # the Parquet datasets it writes (inspect and the report read them)
    beam: bool = True           # a Beam pipeline (takes the runner flags), or plain Python
    subcommand: tuple[str, ...] = field(default=())  # words after the command name that a build passes

    @property
    def package(self) -> str:
        return f"webtext.{self.name}"

    @property
    def command(self) -> str:
        """The module with the stage's flags and `main`."""
        return f"{self.package}.command"

    @property
    def pipeline(self) -> str:
        """The module with the stage's Beam graph, `graph(p, args)` among it (beam stages only)."""
        return f"{self.package}.pipeline"


STAGES: tuple[Stage, ...] = (
    Stage("links", "Reddit submission dumps -> deduplicated outbound link table", "links",
          {}, ("links", "errors")),
    Stage("fetch", "download links politely into WARC files and a fetch log", "fetch",
          {"--links": "links"}, ("log", "errors")),
    Stage("extract", "main text out of fetched pages (or any WARC files)", "extract",
          {"--fetch": "fetch"}, ("documents", "errors")),
    Stage("dedup", "exact and MinHash near-duplicate removal", "dedup",
          {"--docs": "extract"}, ("documents", "clusters", "errors")),
    Stage("tokenizer", "train (or import) a byte-level BPE tokenizer", "tokenizer",
          {"--docs": "dedup"}, (), beam=False, subcommand=("train",)),
    Stage("encode", "documents -> sharded Arrow token files", "shards",
          {"--docs": "dedup", "--tokenizer": "tokenizer"}, ("errors",)),
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    return BY_NAME[name]
