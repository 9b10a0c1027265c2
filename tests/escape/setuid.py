"""Attack: gain root (or capabilities) through setuid-root and file-capability binaries.

Each binary is started with its stdout and stderr on a pipe that is already full, so its first
write blocks: while it sits there (typically prompting for a password, which a setuid-root program
does with euid 0), its /proc status shows the ids and capabilities the exec gave it. They must all
be the job's: no_new_privs and nosuid mounts make the setuid bit and file capabilities inert.
PROBE_FCAPS lists binaries with file capabilities on this host (found by the test). With
PROBE_HOST_USR=1 (an agent with `base: host`) the host's own setuid programs must be there to be
tried; on the base image, no file under /usr may be setuid, setgid or file-capable at all.
"""
import os
import stat
import subprocess
import time

from probelib import expect, finish, mountinfo, note, status

me = status()
expect(me["NoNewPrivs"].strip() == "1", f"NoNewPrivs: {me['NoNewPrivs']}")
for m in mountinfo():
    expect("nosuid" in m.opts, f"{m.point} is nosuid ({','.join(sorted(m.opts))})")

uid = os.getuid()
CANDIDATES = [["/usr/bin/passwd", "-S", "root"], ["/usr/bin/su", "root", "-c", "id"], ["/usr/bin/chfn"],
              ["/usr/bin/newgrp", "root"], ["/usr/bin/gpasswd", "root"], ["/usr/bin/chsh"],
              ["/usr/bin/mount"], ["/usr/bin/sudo", "-n", "true"]]
CANDIDATES += [[p] for p in os.environ.get("PROBE_FCAPS", "").split(":") if p]


def full_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(w, False)
    for chunk in (65536, 1):
        try:
            while True:
                os.write(w, b"x" * chunk)
        except BlockingIOError:
            pass
    os.set_blocking(w, True)
    return r, w


observed = 0
for argv in CANDIDATES:
    path = argv[0]
    if not os.path.exists(path):
        continue
    st = os.stat(path)
    kind = "setuid-root" if st.st_mode & stat.S_ISUID and st.st_uid == 0 else "file-capability"
    try:
        has_fcaps = bool(os.getxattr(path, "security.capability"))
    except OSError:
        has_fcaps = False
    if kind != "setuid-root" and not has_fcaps:
        note(f"{path} is neither setuid-root nor file-capable here; skipped")
        continue
    r, w = full_pipe()
    try:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=w, stderr=w)
    except PermissionError as exc:
        # the kernel refuses to exec a file-capability binary whose capabilities it will not grant
        expect(True, f"{' '.join(argv)} ({kind}): exec refused ({exc.strerror})")
        os.close(r)
        os.close(w)
        observed += 1
        continue
    os.close(w)
    fields = None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            s = status(p.pid)
        except OSError:
            break
        if s.get("State", "").startswith(("S", "D")):
            fields = s
            break
        if s.get("State", "").startswith("Z"):
            break
        time.sleep(0.02)
    p.kill()
    p.wait()
    os.close(r)
    if fields is None:
        note(f"{' '.join(argv)} ({kind}) ended before it could be observed")
        continue
    observed += 1
    ids = fields["Uid"].split() + fields["Gid"].split()
    expect(set(ids) <= {str(uid), str(os.getgid())},
           f"{' '.join(argv)} ({kind}) ran with Uid {fields['Uid']!r} Gid {fields['Gid']!r} (job uid {uid})")
    caps = {k: fields[k] for k in ("CapPrm", "CapEff", "CapAmb")}
    expect(all(int(v, 16) == 0 for v in caps.values()), f"{' '.join(argv)} ({kind}) capabilities {caps}")
if os.environ.get("PROBE_HOST_USR") == "1":
    expect(observed >= 2, f"observed {observed} privileged binaries while they ran")
else:
    privileged = []
    for folder, _, files in os.walk("/usr"):
        for name in files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and (st.st_mode & (stat.S_ISUID | stat.S_ISGID)
                                             or "security.capability" in os.listxattr(path)):
                privileged.append(path)
    expect(not privileged, f"no setuid, setgid or file-capability file in the base image: {privileged[:5]}")
finish()
