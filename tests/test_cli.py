import os
import subprocess
import sys

import pytest

from webtext import cli


def test_top_level_help_lists_every_available_command():
    out = subprocess.run([sys.executable, "-m", "webtext.cli", "--help"], capture_output=True, text=True, check=True)
    for name in cli._available():
        assert f"  {name} " in out.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_help_ends_with_an_example_of_itself(name):
    assert name in cli._available(), f"{name}: module {cli.COMMANDS[name][0]} is missing"
    parser, module = cli.command_parser(name)
    text = parser.format_help()
    assert "example:" in text
    assert f"webtext {name}" in text.split("example:", 1)[1]


def test_unknown_command_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err



def test_the_command_exits_at_once_with_its_status_and_all_its_output():
    """`webtext` skips the interpreter's teardown (`cli.exit_now`): its exit handlers still run, its output
    (far more than a pipe holds) is all there, its exit status is the command's, and a non-daemon thread
    still running is waited for as Python would."""
    script = ("import atexit, sys, threading, time; from webtext import cli; "
              "atexit.register(lambda: print('exit handler ran', file=sys.stderr)); "
              "sys.stdout.write('x' * 300_000); "
              "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done')), daemon=False).start() "
              "if sys.argv[1] == 'thread' else None; cli.exit_now(3)")
    for mode in ("plain", "thread"):
        done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True)
        assert done.returncode == 3, done.stderr
        assert done.stdout.startswith("x" * 300_000) and "exit handler ran" in done.stderr
        assert done.stdout.endswith("thread done\n") == (mode == "thread")


def test_output_that_cannot_be_written_fails_the_command_and_a_closed_stdout_does_not():
    script = "import sys; from webtext import cli; sys.stdout.write('x' * 100); cli.exit_now(0)"
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", script], stdout=full, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": ""})
    assert done.returncode == 120 and "could not write its output" in done.stderr
    quiet = "import sys; from webtext import cli; assert sys.stdout is None; cli.exit_now(0)"
    closed = subprocess.run([sys.executable, "-c", quiet], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: os.close(1))  # `webtext ... >&-`
    assert closed.returncode == 0, closed.stderr


def test_the_console_script_is_the_fast_exit_entry():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["webtext"] == "webtext.cli:entry"
