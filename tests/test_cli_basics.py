"""The CLI shell: version, help without importing torch, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from bench import __version__


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and __version__ in out


def test_help_lists_every_command(run_cli):
    from bench.cli import COMMANDS

    code, out, _ = run_cli("--help")
    assert code == 0
    for name in COMMANDS:
        assert name in out


def test_every_command_loads_and_has_help(run_cli):
    from bench.cli import COMMANDS

    for name in COMMANDS:
        code, out, err = run_cli(name, "--help")
        assert code == 0, (name, err)
        assert "Usage: rbench " + name in out


def test_help_does_not_import_torch():
    # `rbench --help` must answer at once: listing the commands imports none of them.
    code = "import sys; from bench.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_unknown_command_is_one_line_exit_2(run_cli):
    code, out, err = run_cli("lsit")
    assert code == 2
    assert err.count("\n") == 1 and "did you mean list" in err


def test_unknown_option_is_one_line_exit_2(run_cli):
    code, _, err = run_cli("--frobnicate")
    assert code == 2 and err.count("\n") == 1 and err.startswith("rbench: error:")
