"""Attack: find any writable place besides /work, /tmp and /dev/shm.

Mountinfo: every mount without "ro" must be /work, /tmp, /dev/shm, devpts, proc or a bound device
node. Then, black-box: try to create a file in every directory of the sandbox (except /proc and
/dev's device binds); only /work, /tmp and /dev/shm may accept it (the file is removed at once).
"""
import os
import uuid

from probelib import create_and_remove, ename, err, expect, finish, mountinfo, note

WRITABLE = {"/work", "/tmp", "/dev/shm"}
DEVICES = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}
for m in mountinfo():
    if "ro" in m.opts:
        continue
    allowed = (m.point in WRITABLE or m.point in DEVICES or (m.point == "/dev/pts" and m.fstype == "devpts")
               or (m.point == "/proc" and m.fstype == "proc"))
    expect(allowed, f"writable mount {m.point} ({m.fstype}, {','.join(sorted(m.opts))}) is one of the allowed")

tag = uuid.uuid4().hex
writable, tried = [], 0
for top in sorted(os.listdir("/")):
    if top in ("proc", "sys"):
        continue
    for dirpath, dirnames, _files in os.walk("/" + top):
        if dirpath == "/dev/pts":
            dirnames[:] = []
            continue
        tried += 1
        if err(create_and_remove, os.path.join(dirpath, f".jnb-probe-{tag}")) is None:
            writable.append(dirpath)
note(f"tried to create a file in {tried} directories")
expect(tried > 200, "the walk covered the system trees")  # the base image has ~300 folders
outside = [d for d in writable if not any(d == w or d.startswith(w + "/") for w in WRITABLE)]
expect(not outside, f"directories that accepted a new file outside /work, /tmp, /dev/shm: {outside[:20]}")
for w in sorted(WRITABLE):
    expect(w in writable, f"{w} is writable (the positive control)")
finish()
