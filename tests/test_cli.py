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
