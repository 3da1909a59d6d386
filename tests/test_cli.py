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
