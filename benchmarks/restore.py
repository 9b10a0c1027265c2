"""Live restore: how long a restarted agent takes to take back its running jobs.

    .venv/bin/python benchmarks/restore.py [--jobs 100] [--rounds 3]

As root. It starts its own agent (a temporary root, a free loopback port; tests/agentproc.py),
starts `--jobs` jobs that sleep, waits until all run, then per round kills the agent (SIGKILL) and
starts it again, and times:

  start -> serving    from starting `joblet-agent serve` until /v1/health answers; the agent
                      re-adopts every job before it serves, so this is start to all re-adopted
  re-adoption         the agent's own figure for it (its log: "re-adopted N running jobs ... in S s")
  empty start         the same start with no job to take back (the rounds' baseline)

and checks after each round that every job is RUNNING and the last one can still be stopped. At
the end the agent stops every job (--stop-jobs) and everything is removed, also after a failure.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from agentproc import AgentProcess, running_agent  # noqa: E402
from waiting import wait_until  # noqa: E402

ADOPTED = re.compile(r"re-adopted (\d+) running jobs and sessions in ([0-9.]+) s")


def timed_start(agent: AgentProcess) -> float:
    began = time.perf_counter()
    agent.start()  # returns once /v1/health answers
    return time.perf_counter() - began


def agent_figure(agent: AgentProcess) -> tuple[int, float]:
    found = ADOPTED.findall(agent.log_path.read_text())
    return (int(found[-1][0]), float(found[-1][1])) if found else (0, 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    serving, internal, empty = [], [], []
    with running_agent(stop_jobs=False) as agent:
        for _ in range(args.rounds):
            agent.stop(signal.SIGKILL)
            empty.append(timed_start(agent))
        api = agent.api()
        jobs = [api.submit(command=["sleep", "3600"]) for _ in range(args.jobs)]
        wait_until(lambda: all(api.record(j)["status"] == "RUNNING" for j in jobs), 120,
                   message="the jobs did not all start")
        for n in range(args.rounds):
            agent.stop(signal.SIGKILL)
            serving.append(timed_start(agent))
            count, seconds = agent_figure(agent)
            internal.append(seconds)
            api = agent.api()
            statuses = {api.record(j)["status"] for j in jobs}
            assert count == args.jobs and statuses == {"RUNNING"}, (count, statuses)
            print(f"round {n + 1}: start -> serving {serving[-1]:.3f} s, re-adoption {seconds:.3f} s "
                  f"({count} jobs)", flush=True)
        last = jobs.pop()
        api.call("POST", f"/v1/jobs/{last}/stop")
        assert api.wait_for_status(last)["status"] == "STOPPED"
    med = statistics.median
    print(f"\n{args.jobs} running jobs, {args.rounds} rounds (median):")
    print(f"  start -> serving, all jobs re-adopted   {med(serving):.3f} s")
    print(f"  re-adoption itself (agent's figure)      {med(internal):.3f} s")
    print(f"  start -> serving with no job             {med(empty):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
