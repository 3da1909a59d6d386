"""The `webtext` command line.

Subcommands are registered in `COMMANDS` by module path and imported only when used, so `webtext --help`
and `webtext links` never pay for importing torch, and `webtext train` never pays for importing Beam.

Each command module defines:
    EXAMPLE: str                      shown at the end of `--help` (must work as written)
    add_arguments(parser) -> None     its flags
    main(args) -> int                 the exit status
and its module docstring's first paragraph is the command's description.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from webtext import __version__
from webtext.stages import STAGES

# name -> (module, one-line summary), in pipeline order: the stages (webtext.stages), then the other commands.
COMMANDS: dict[str, tuple[str, str]] = {
    **{s.name: (s.command, s.summary) for s in STAGES},
    "inspect": ("webtext.inspect", "look inside any stage's output"),
    "verify": ("webtext.encode.verify", "check token shards against their manifest"),
    "train": ("webtext.model.train", "train GPT-2 on token shards"),
    "sample": ("webtext.model.sample", "generate text from a checkpoint"),
    "eval": ("webtext.model.evaluate", "loss and perplexity of a checkpoint on a split"),
    "export": ("webtext.model.export", "export a checkpoint as a Hugging Face GPT-2 directory"),
    "build": ("webtext.build", "run every stage of a job file under one output root"),
    "demo": ("webtext.demo.command", "the whole path on a built-in offline sample"),
}


def _top_parser(commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {summary}" for name, (_, summary) in commands.items())
    parser = argparse.ArgumentParser(
        prog="webtext",
        description="Build a WebText-style corpus from Reddit dumps and train GPT-2 on it.",
        epilog=f"commands:\n{lines}\n\nexample:\n  webtext demo\n\n`webtext COMMAND --help` explains each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="webtext [--version] COMMAND [ARGS...]",
    )
    parser.add_argument("--version", action="version", version=f"webtext {__version__}")
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The parser of one subcommand, and its module."""
    module = importlib.import_module(COMMANDS[name][0])
    doc = (module.__doc__ or COMMANDS[name][1]).strip()
    example = getattr(module, "EXAMPLE", "").strip("\n")
    parser = argparse.ArgumentParser(
        prog=f"webtext {name}",
        description=doc,
        epilog=f"example:\n{example}" if example else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


class _QuietBeamImport(logging.Filter):
    """Beam warns that Google Cloud libraries are absent: expected without the gcp extra."""

    EXPECTED = ("apitools not found", "Unable to check soft delete policy")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.EXPECTED)


def configure_logging() -> None:
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietBeamImport())
    # The local runner relays its worker processes' start-up chatter as warnings; real failures still raise.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.options.pipeline_options").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    top = _top_parser(COMMANDS)
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv)  # handles --help / --version and exits
        top.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r} (choose from {', '.join(COMMANDS)})")
    parser, module = command_parser(name)
    args = parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The `webtext` console script: `main`'s status. A reader that closed the pipe before the last of the
    output was flushed (`webtext inspect DIR | head`) is not an error: what is left goes nowhere (Python's
    documented way, see SIGPIPE in the `signal` docs); inspect does the same for what it writes as it goes."""
    status = main()
    try:
        if sys.stdout is not None:  # None when started with the descriptor closed (`webtext ... >&-`)
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(status)


if __name__ == "__main__":
    entry()
