"""Attack: read or alter the job's plan, or anything of the host, through the job's PID 1.

jnb-init gets its plan (argv, environment, uid, the root's host path, the Landlock rules, the
seccomp program) in a sealed memfd, which it closes before the job's process exists; it runs with
an empty environment and the command line `jnb-init`, not dumpable, as root. So: no process the
job can see holds the plan's descriptor; PID 1's environment, memory, descriptors, executable and
maps are closed to the job; nothing readable of PID 1 names a host path (PROBE_FORBIDDEN); PID 1
cannot be traced or read with process_vm_readv. Nothing is written anywhere."""
import ctypes
import glob
import os

from probelib import SYSCALLS, expect, finish, libc, note

forbidden = [w for w in os.environ["PROBE_FORBIDDEN"].split(":") if w]

plan_links = []
for fd_dir in glob.glob("/proc/[0-9]*/fd") + glob.glob("/proc/[0-9]*/task/[0-9]*/fd"):
    try:
        names = os.listdir(fd_dir)
    except OSError:
        continue
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if "jnb-plan" in target or target.startswith("/memfd:"):
            plan_links.append(f"{fd_dir}/{name} -> {target}")
expect(not plan_links, f"no process the job sees holds the plan's memfd ({plan_links[:3]})")

for name in ("environ", "mem", "maps", "fd/5", "fd/0", "auxv", "task/1/environ"):
    path = f"/proc/1/{name}"
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
        outcome = f"read {len(data)} bytes"
    except OSError as exc:
        data, outcome = b"", exc.strerror
    note(f"{path}: {outcome}")
    expect(not data, f"{path} gives the job nothing ({outcome})")
for name in ("exe", "cwd", "root", "fd"):
    try:
        outcome = os.readlink(f"/proc/1/{name}") if name != "fd" else str(os.listdir("/proc/1/fd"))
        held = False
    except OSError as exc:
        outcome, held = exc.strerror, True
    expect(held, f"/proc/1/{name} is closed to the job ({outcome})")

for name in ("cmdline", "status", "comm", "stat", "task/1/cmdline"):  # mounts: mountinfo_root.py
    try:
        with open(f"/proc/1/{name}", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError as exc:
        note(f"/proc/1/{name}: {exc.strerror}")
        continue
    leaked = [w for w in forbidden if w in text]
    expect(not leaked, f"/proc/1/{name} names no host path ({leaked or 'none of ' + str(len(forbidden))})")

PTRACE_ATTACH = 16
rc = libc.ptrace(ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(1), None, None)
expect(rc == -1, f"ptrace(PTRACE_ATTACH, 1) refused (errno {ctypes.get_errno()})")
buffer = ctypes.create_string_buffer(16)
local = (ctypes.c_void_p * 2)(ctypes.cast(buffer, ctypes.c_void_p), 16)
remote = (ctypes.c_void_p * 2)(0x400000, 16)
rc = libc.syscall(ctypes.c_long(SYSCALLS["process_vm_readv"]), ctypes.c_long(1), local, ctypes.c_ulong(1),
                  remote, ctypes.c_ulong(1), ctypes.c_ulong(0))
expect(rc == -1, f"process_vm_readv of PID 1 refused (errno {ctypes.get_errno()})")
finish()
