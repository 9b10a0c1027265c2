"""Attack: a fork bomb. Forks as fast as it can, bounded: it stops at PROBE_MAX_FORKS attempts or at
the first EAGAIN, whichever comes first, then releases and reaps every child. The job's pids limit
(PROBE_PIDS) must stop it with EAGAIN long before the bound. Run as
`python3 fork_bomb.py <marker>`, so that every child carries the test's marker in its argv and the
host can check that none survives the job.

Harmless if the limit is missing: at most PROBE_MAX_FORKS (10,000) children that only block on a
pipe and exit when it closes."""
import errno
import os
import sys

from probelib import expect, finish, note

limit = int(os.environ["PROBE_PIDS"])
bound = int(os.environ.get("PROBE_MAX_FORKS", "10000"))
r, w = os.pipe()
children: list[int] = []
failure = None
for _ in range(bound):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = exc.errno
        break
    if pid == 0:
        os.close(w)
        try:
            os.read(r, 1)  # blocks until the parent closes its end
        finally:
            os._exit(0)
    children.append(pid)
os.close(w)  # every child sees EOF and exits
os.close(r)
reaped = 0
for pid in children:
    os.waitpid(pid, 0)
    reaped += 1
note(f"forked {len(children)} children, then {errno.errorcode.get(failure, failure) if failure else 'no error'}; "
     f"reaped {reaped}; marker {sys.argv[1:]}")
expect(failure == errno.EAGAIN, f"fork failed with EAGAIN (got {errno.errorcode.get(failure, failure)})")
expect(len(children) < limit, f"{len(children)} children forked, fewer than the job's pids limit {limit}")
expect(len(children) < bound, f"the limit stopped the bomb before the probe's own bound of {bound}")
expect(reaped == len(children), "every child was reaped")
# the job can fork again once its children are gone: the limit counts live processes only
pid = os.fork()
if pid == 0:
    os._exit(7)
_, st = os.waitpid(pid, 0)
expect(os.WIFEXITED(st) and os.WEXITSTATUS(st) == 7, "fork works again after the children were reaped")
finish()
