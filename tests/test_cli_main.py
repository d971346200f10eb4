"""`wvm` dispatch: unknown commands and unknown options are reported with the right usage."""
from __future__ import annotations

import pytest

from wvm_ros.cli.main import COMMANDS, main


def test_unknown_command_lists_the_commands(capsys):
    assert main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'nope'" in err and all(c in err for c in COMMANDS)


def test_unknown_option_of_a_command_shows_that_commands_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["model-info", "--preset", "tiny", "--bogus", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: wvm model-info" in err
    assert "wvm model-info: error: unrecognized arguments: --bogus 1" in err


def test_unknown_top_level_option_and_no_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--bogus"])
    assert e.value.code == 2 and "wvm: error: unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main([]) == 0 and "COMMAND" in capsys.readouterr().out
