import subprocess
import sys

import pytest

from webtext import cli


def test_top_level_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "webtext.cli", "--help"], capture_output=True, text=True, check=True)
    for name in cli.COMMANDS:
        assert f"  {name} " in out.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_help_ends_with_an_example_of_itself(name):
    parser, module = cli.command_parser(name)
    text = parser.format_help()
    assert "example:" in text
    assert f"webtext {name}" in text.split("example:", 1)[1]


def test_unknown_command_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_the_console_script_exits_with_the_commands_status(monkeypatch):
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["webtext"] == "webtext.cli:entry"
    monkeypatch.setattr(cli, "main", lambda: 3)
    with pytest.raises(SystemExit) as e:
        cli.entry()
    assert e.value.code == 3


def test_no_command_prints_the_help_and_exits_2():
    done = subprocess.run([sys.executable, "-m", "webtext.cli"], capture_output=True, text=True)
    assert done.returncode == 2 and "commands:" in done.stdout


def _entry(script: str, **kwargs) -> subprocess.CompletedProcess:
    """`cli.entry()` in a fresh interpreter, its `main` replaced by the script's."""
    code = f"from webtext import cli\n{script}\ncli.entry()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, **kwargs)


def test_a_closed_stdout_leaves_the_status_as_main_gave_it():
    import os

    done = _entry("cli.main = lambda: 3", stdout=None, preexec_fn=lambda: os.close(1))  # `webtext ... >&-`
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr


def test_a_reader_that_left_before_the_last_flush_is_not_an_error():
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is flushed
    done = subprocess.run([sys.executable, "-c", "import sys\nfrom webtext import cli\n"
                           "cli.main = lambda: sys.stdout.write('x' * 100) and 0\ncli.entry()\n"],
                          stdout=write, stderr=subprocess.PIPE, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    os.close(write)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_a_broken_pipe_inside_a_command_is_not_taken_for_a_closed_reader():
    done = _entry("def main():\n    raise BrokenPipeError('a pipe to a child process')\ncli.main = main")
    assert done.returncode != 0 and "BrokenPipeError" in done.stderr
