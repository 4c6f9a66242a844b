"""A stop signal that reaches the `yrmpi` command while it starts up is held, never fatal and
never a false success: the command ends with 75 ("stopped with work left, rerun")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from yrmpi import launch
from yrmpi.core import startup


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    signals: list[int] = []
    monkeypatch.setattr(startup, "_held", signals)
    return signals


def test_a_signal_held_during_start_up_ends_the_launch_before_mpiexec(held, monkeypatch, caplog) -> None:
    def no_launch(*_a, **_k):
        raise AssertionError("mpiexec must not start after a stop signal")

    monkeypatch.setattr(subprocess, "Popen", no_launch)
    held.append(signal.SIGTERM)
    with caplog.at_level("WARNING", logger="yrmpi"):
        code = launch.run(["mpiexec", "-n", "2", sys.executable, "-m", "yrmpi", "job.py"])
    assert code == launch.EXIT_INTERRUPTED == 75
    assert "stopped by SIGTERM before the job started; nothing ran" in caplog.text


def test_only_the_command_itself_holds_signals(monkeypatch) -> None:
    """Ranks (started by a launcher) and user programs keep Python's default handling."""
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "yrmpi", "sweep", "x.yaml"], raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    for name in startup.LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    assert startup._is_the_command()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert not startup._is_the_command()
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "train.py"], raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert not startup._is_the_command()


def test_the_command_process_holds_a_signal_sent_while_it_imports(tmp_path) -> None:
    """A real `python -m yrmpi` process: SIGTERM as soon as it has entered yrmpi is held."""
    marker = tmp_path / "job.py"
    marker.write_text("print('never runs')\n")
    code = (
        "import os, signal, sys\n"
        "sys.orig_argv = [sys.executable, '-m', 'yrmpi', 'run', sys.argv[1]]\n"
        "import yrmpi\n"  # holds stop signals from its first line
        "os.kill(os.getpid(), signal.SIGTERM)\n"  # as if it came during the imports
        "from yrmpi import launch\n"
        "sys.exit(launch.run(['mpiexec', '-n', '2', sys.executable, '-m', 'yrmpi', sys.argv[1]]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in startup.LAUNCHER_VARS}
    proc = subprocess.run([sys.executable, "-c", code, str(marker)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 75, proc.stderr
    assert "never runs" not in proc.stdout
