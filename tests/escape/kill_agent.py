"""Attack: signal the agent (its host pid PROBE_AGENT_PID) or the test runner (PROBE_TEST_PID).
Only signal 0 is sent: the pids do not exist in the job's PID namespace (ProcessLookupError);
PermissionError would also stop it. pidfd_open of them must fail as well."""
import errno
import os

from probelib import ename, expect, finish, sys_call

for var in ("PROBE_AGENT_PID", "PROBE_TEST_PID"):
    pid = int(os.environ[var])
    try:
        os.kill(pid, 0)
        outcome = "delivered"
    except ProcessLookupError:
        outcome = "ProcessLookupError"
    except PermissionError:
        outcome = "PermissionError"
    expect(outcome != "delivered", f"kill({pid} = {var}, 0): {outcome}")
    e = sys_call("pidfd_open", pid, 0)
    expect(e in (errno.ESRCH, errno.EPERM), f"pidfd_open({pid}): {ename(e)}")
    e = os.system(f"kill -0 {pid} 2>/dev/null")
    expect(e != 0, f"/bin/kill -0 {pid} fails")
finish()
