"""Attack: use a descriptor leaked from the agent or the launcher (runc's CVE-2024-21626 class).
Checked first thing, before the probe opens anything: only 0, 1 and 2 are open; 0 is /dev/null,
1 and 2 are pipes; the cwd is /work and the root is the sandbox's."""
import os
import resource
import stat

leaked = []
soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
for fd in range(3, max(1024, min(soft, 1 << 16))):
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    leaked.append((fd, stat.filemode(st.st_mode), os.readlink(f"/proc/self/fd/{fd}")))

from probelib import expect, finish, note  # noqa: E402  (imported only after the check)

expect(not leaked, f"descriptors open beyond 0-2 at start: {leaked}")
note(f"fd 0 -> {os.readlink('/proc/self/fd/0')}, 1 -> {os.readlink('/proc/self/fd/1')}")
st0 = os.fstat(0)
expect(stat.S_ISCHR(st0.st_mode) and (os.major(st0.st_rdev), os.minor(st0.st_rdev)) == (1, 3), "fd 0 is /dev/null")
for fd in (1, 2):
    expect(stat.S_ISFIFO(os.fstat(fd).st_mode), f"fd {fd} is a pipe ({stat.filemode(os.fstat(fd).st_mode)})")
expect(os.getcwd() == "/work", f"cwd {os.getcwd()}")
expect(os.readlink("/proc/self/cwd") == "/work", f"/proc/self/cwd -> {os.readlink('/proc/self/cwd')}")
expect(os.readlink("/proc/self/root") == "/", f"/proc/self/root -> {os.readlink('/proc/self/root')}")
finish()
