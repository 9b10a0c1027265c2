"""Attack: a crash that writes a core file (a copy of the process's memory, possibly with secrets,
left in /work where the agent copies it out, or in /tmp). RLIMIT_CORE must be 0 with a hard limit
of 0 (so the job cannot raise it), and a child that calls abort() in /work and one in /tmp die of
SIGABRT without a core: no "core dumped" in their wait status and no core file left behind. The
probe itself then ends normally, so the job completes.

Harmless if it fails: a core of a small Python child inside the job's own /work or /tmp."""
import os
import resource
import signal

from probelib import expect, finish, note


def core_files() -> list[str]:
    found = []
    for top in ("/work", "/tmp"):
        for dirpath, _dirs, files in os.walk(top):
            found += [os.path.join(dirpath, f) for f in files if f.startswith("core")]
    return found


soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
expect((soft, hard) == (0, 0), f"RLIMIT_CORE is (soft {soft}, hard {hard}), want (0, 0)")
try:
    resource.setrlimit(resource.RLIMIT_CORE, (1 << 30, 1 << 30))
    raised = True
except (ValueError, OSError) as exc:
    raised = False
    note(f"raising RLIMIT_CORE: {exc}")
expect(not raised, "the job cannot raise its RLIMIT_CORE hard limit")
expect(resource.getrlimit(resource.RLIMIT_CORE) == (0, 0), "RLIMIT_CORE is still (0, 0)")
try:
    note(f"core_pattern: {open('/proc/sys/kernel/core_pattern').read().strip()!r}")
except OSError as exc:
    note(f"core_pattern unreadable: {exc.strerror}")

before = core_files()
for where in ("/work", "/tmp"):
    pid = os.fork()
    if pid == 0:
        os.chdir(where)
        if raised:  # keep the crash harmless even where the limit could be raised
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.abort()
    _, st = os.waitpid(pid, 0)
    expect(os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGABRT,
           f"a child in {where} died of SIGABRT (status {st:#x})")
    expect(not os.WCOREDUMP(st), f"the crash in {where} dumped no core")
after = core_files()
expect(after == before == [], f"no core file in /work or /tmp: {after}")
finish()
