"""Attack: find secrets in the environment. It holds only the sandbox's variables (PATH HOME USER
LOGNAME LANG TMPDIR PYTHONUNBUFFERED JOB_ID) and what the request set (PROBE_*): nothing of the
agent's or the host's (PROBE_HOST_ENV_NAMES, the test runner's own names)."""
import os

from probelib import expect, finish, note

BASE = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "PYTHONUNBUFFERED", "JOB_ID"}
REQUIRED = {"PATH", "HOME", "USER", "TMPDIR", "JOB_ID"}
names = set(os.environ)
requested = {n for n in names if n.startswith("PROBE_")}
note(f"environment names: {sorted(names)}")
expect(names - requested <= BASE, f"only the sandbox's names: extra {sorted(names - requested - BASE)}")
expect(REQUIRED <= names, f"the sandbox's own names are set: missing {sorted(REQUIRED - names)}")
raw = open("/proc/self/environ", "rb").read().split(b"\0")
initial = {item.split(b"=", 1)[0].decode() for item in raw if item}
expect(initial == names, f"the initial environment (/proc/self/environ) is the same: {sorted(initial ^ names)}")
host = set(os.environ["PROBE_HOST_ENV_NAMES"].split(",")) - BASE
expect(not host & names, f"no host variable: {sorted(host & names)}")
expect(os.environ["HOME"] == "/work" and os.environ["TMPDIR"] == "/tmp" and os.environ["USER"] == "job",
       f"HOME={os.environ['HOME']} TMPDIR={os.environ['TMPDIR']} USER={os.environ['USER']}")
expect(os.environ["PROBE_REQUESTED"] == "kept", "a variable the request set is there")
for name, value in os.environ.items():
    if name in requested:
        continue
    expect("token" not in value.lower() and "secret" not in name.lower(), f"{name} holds no token")
finish()
