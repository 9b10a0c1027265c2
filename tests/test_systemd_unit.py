"""The systemd unit in deploy/systemd fits the agent: systemd accepts it, its command line is one
the agent takes, and its stop and restart policy match what live restore needs (README "Running
as a service")."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from joblet_agent.cli import build_parser

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "joblet-agent.service"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser["Service"]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart pointing at this checkout's joblet-agent."""
    agent = Path(sys.executable).with_name("joblet-agent")
    assert agent.exists(), agent
    text = UNIT.read_text().replace("/usr/local/bin/joblet-agent", str(agent))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    out = subprocess.run([shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(unit)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert UNIT.name not in out.stderr, out.stderr


def test_its_command_line_is_the_agents() -> None:
    argv = shlex.split(service()["ExecStart"])
    assert argv[0] == "/usr/local/bin/joblet-agent" and argv[1] == "serve"
    args = build_parser().parse_args(argv[1:])
    assert args.root == "/opt/joblet" and not args.stop_jobs  # running work survives a restart


def test_stop_and_restart_leave_the_jobs_to_their_holders() -> None:
    unit = service()
    assert unit["KillMode"] in ("mixed", "process")  # SIGTERM to the agent alone
    assert unit["KillSignal"] == "SIGTERM"
    assert unit["Restart"] == "on-failure"
    assert "2" in unit["RestartPreventExitStatus"].split()  # a refusal to start (cli.main returns 2)
