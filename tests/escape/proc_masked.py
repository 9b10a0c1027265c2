"""Attack: read kernel memory, keys, kernel logs and symbols, or trigger sysrq through /proc.
kcore is absent or empty, keys/kmsg/kallsyms/timer_list read empty, sysrq-trigger is absent or
cannot be opened for writing (opened only, nothing is written), and the masked directories list
nothing."""
import errno
import os

from probelib import ename, err, expect, finish, note, open_for_write


def content(path: str, n: int = 4096) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, n)
    finally:
        os.close(fd)


if os.path.exists("/proc/kcore"):
    expect(os.stat("/proc/kcore").st_size == 0 and content("/proc/kcore") == b"", "/proc/kcore is empty")
else:
    expect(True, "/proc/kcore is absent")
for name in ("keys", "kmsg", "kallsyms", "timer_list", "sched_debug", "kpageflags", "kpagecount"):
    path = f"/proc/{name}"
    if not os.path.exists(path):
        expect(True, f"{path} is absent")
        continue
    try:
        data = content(path)
        outcome = f"{len(data)} bytes"
    except OSError as exc:
        data, outcome = b"", ename(exc.errno)
    expect(data == b"", f"read {path}: {outcome} (want empty or refused)")
if os.path.exists("/proc/sysrq-trigger"):
    e = err(open_for_write, "/proc/sysrq-trigger")
    expect(e is not None, f"open /proc/sysrq-trigger O_WRONLY: {ename(e)}")
else:
    expect(True, "/proc/sysrq-trigger is absent (kernel without magic sysrq)")
for name in ("acpi", "scsi", "asound", "firmware", "driver"):
    path = f"/proc/{name}"
    if os.path.isdir(path):
        expect(os.listdir(path) == [], f"{path} lists nothing")
if os.path.exists("/proc/key-users"):  # not masked (nor by Docker): per-uid key counts only
    note(f"/proc/key-users (not a secret, not masked): {open('/proc/key-users').read()[:120]!r}")
e = err(open_for_write, "/proc/kmsg") if os.path.exists("/proc/kmsg") else errno.ENOENT
expect(e is not None, f"open /proc/kmsg O_WRONLY: {ename(e)}")
finish()
