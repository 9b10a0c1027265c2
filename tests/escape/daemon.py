"""Job side of the daemon attack: double-fork a daemon (new session, fds on /dev/null) that runs
`sleep` with argv[0] = PROBE_MARKER, wait until it shows in the job's /proc, then either exit
(PROBE_THEN=exit) or keep running until stopped (PROBE_THEN=wait)."""
import os
import sys
import time

marker = os.environ["PROBE_MARKER"]
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execvp("sleep", [marker, "1000"])
    os._exit(0)
os.waitpid(pid, 0)
deadline = time.monotonic() + 10
daemon = None
while daemon is None and time.monotonic() < deadline:
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[0] == marker.encode():
                    daemon = int(p)
            except OSError:
                pass
    time.sleep(0.05)
if daemon is None:
    print("the daemon never started", flush=True)
    sys.exit(2)
print(f"daemon running as pid {daemon} in the job, parent {open(f'/proc/{daemon}/stat').read().split()[3]}", flush=True)
if os.environ["PROBE_THEN"] == "wait":
    time.sleep(600)
