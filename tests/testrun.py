"""This pytest run on the host: an id, a lock that says the run is alive, and a ledger of the
host-wide objects it makes (network namespaces, links, mounts, folders, address blocks).

Several suites may run on one host at once (helpers, CI), and a run may be killed before its
`finally` blocks run (SIGKILL, a timeout). So every object a run makes outside its own folders is
written to `/run/jnb-test/<run>.ledger` *before* it is made, while the run holds an flock on
`/run/jnb-test/<run>.lock` for its whole life. The kernel drops that lock when the run's process is
gone, however it ended: a lock another run can take belongs to a dead run, and `sweep()` removes
what that run's ledger lists. Nothing without a ledger (made by older code) and nothing of a live
run is ever touched. Address blocks are claimed the same way (`claim`), so concurrent runs never
pick the same addresses, and never addresses a route of the host already covers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

LEDGERS = Path(os.environ.get("JNB_TEST_LEDGERS", "/run/jnb-test"))  # another: the sweep's own tests
RUN_ID = secrets.token_hex(4)
KINDS = ("netns", "link", "mount", "dir", "net")

_lock_fd: int | None = None


def _enabled() -> bool:
    return os.geteuid() == 0  # without root a run makes no host-wide object


def _hold_run_lock() -> None:
    """Create `<run>.lock` already locked (made under a temporary name, renamed once locked), so
    a sweeper never sees this run's lock file unlocked."""
    global _lock_fd
    if _lock_fd is not None:
        return
    LEDGERS.mkdir(mode=0o700, exist_ok=True)
    temporary = LEDGERS / f".{RUN_ID}.lock.new"
    fd = os.open(temporary, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(temporary, LEDGERS / f"{RUN_ID}.lock")
    _lock_fd = fd


def _append(entry: dict[str, object]) -> None:
    _hold_run_lock()
    fd = os.open(LEDGERS / f"{RUN_ID}.ledger", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def record(kind: str, name: str) -> None:
    """Write down an object this run is about to make (call it *before* making it)."""
    assert kind in KINDS, kind
    if _enabled():
        _append({"kind": kind, "name": name})


def forget(kind: str, name: str) -> None:
    """The object is gone: a sweep after this run need not look for it."""
    if _enabled():
        _append({"kind": kind, "name": name, "gone": True})


def _entries(ledger: Path) -> list[tuple[str, str]]:
    """The objects a ledger lists and does not say are gone, in the order they were made."""
    live: dict[tuple[str, str], None] = {}
    try:
        lines = ledger.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
            key = (entry["kind"], entry["name"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a killed run
        if entry.get("gone"):
            live.pop(key, None)
        else:
            live[key] = None
    return list(live)


def close() -> None:
    """At the end of the run: its ledger and lock go if every object it lists is gone (claims are
    not objects); otherwise they stay for the next run's sweep."""
    global _lock_fd
    if _lock_fd is None:
        return
    ledger = LEDGERS / f"{RUN_ID}.ledger"
    if all(kind == "net" for kind, _ in _entries(ledger)):
        ledger.unlink(missing_ok=True)
        (LEDGERS / f"{RUN_ID}.lock").unlink(missing_ok=True)
    os.close(_lock_fd)
    _lock_fd = None


# ---- removing objects (the tests' own cleanup and the sweep share this code) --------------------


def _processes_in_netns(path: str) -> list[int]:
    target = os.stat(path)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{entry.name}/ns/net")
                if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                    found.append(int(entry.name))
    return found


def _kill_processes_in_netns(path: str) -> None:
    """SIGKILL every process in the namespace bound at `path`, through a pidfd opened first and
    checked to be in that namespace still (a pid may have been reused meanwhile)."""
    target = os.stat(path)
    for pid in _processes_in_netns(path):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            pass
        finally:
            os.close(pidfd)


def remove_netns(name: str) -> None:
    """The named network namespace, and whatever still runs in it, gone (no error if absent)."""
    from pyroute2 import netns

    path = f"/run/netns/{name}"
    if not os.path.exists(path):
        return
    _kill_processes_in_netns(path)
    netns.remove(name)


def remove_link(ifname: str) -> None:
    """The host's link `ifname` deleted (its routes and a veth's peer go with it), if it exists."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def remove_mount(path: str) -> None:
    while _mounted(path):
        subprocess.run(["umount", "-l", path], check=True)


def remove_dir(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)  # only an empty folder: the tests' mount points


REMOVERS = {"netns": remove_netns, "link": remove_link, "mount": remove_mount, "dir": remove_dir,
            "net": lambda name: None}


def remove(kind: str, name: str) -> None:
    REMOVERS[kind](name)
    forget(kind, name)


@contextlib.contextmanager
def owned(kind: str, name: str) -> Iterator[str]:
    """Record `name`, yield it to be made, and remove it at the end, also after a failure."""
    record(kind, name)
    try:
        yield name
    finally:
        remove(kind, name)


# ---- the sweep ---------------------------------------------------------------------------------


def sweep() -> list[str]:
    """Remove what runs that are gone left behind; returns what was removed ("kind name")."""
    if not _enabled() or not LEDGERS.is_dir():
        return []
    removed = []
    for lock in sorted(LEDGERS.glob("*.lock")):
        run = lock.name.removesuffix(".lock")
        if run == RUN_ID:
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # another sweeper took it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # the run is alive
            removed += _sweep_run(LEDGERS / f"{run}.ledger")
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for unborn in LEDGERS.glob(".*.lock.new"):  # a run killed before its lock had its name
        with contextlib.suppress(OSError):
            fd = os.open(unborn, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                unborn.unlink()
            finally:
                os.close(fd)
    return removed


def _sweep_run(ledger: Path) -> list[str]:
    removed = []
    for kind, name in reversed(_entries(ledger)):
        try:
            REMOVERS[kind](name)
        except Exception as exc:  # noqa: BLE001 - one stuck object must not keep the rest
            removed.append(f"{kind} {name} (failed: {exc})")
            continue
        if kind != "net":
            removed.append(f"{kind} {name}")
    ledger.unlink(missing_ok=True)
    return removed


# ---- address blocks ----------------------------------------------------------------------------


def _host_networks() -> list[ipaddress.IPv4Network]:
    """What the host's IPv4 routes (main table) and addresses cover."""
    from pyroute2 import IPRoute

    found = []
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=2, table=254):
            dst = route.get("dst")
            if dst:
                found.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
        for addr in ipr.get_addr(family=2):
            found.append(ipaddress.IPv4Network(f"{addr.get('address')}/32"))
    return found


def _claimed() -> list[ipaddress.IPv4Network]:
    """Blocks any run's ledger claims (a dead run's too, until it is swept)."""
    return [ipaddress.IPv4Network(name) for ledger in LEDGERS.glob("*.ledger")
            for kind, name in _entries(ledger) if kind == "net"]


def claim(within: str, prefixlen: int) -> ipaddress.IPv4Network:
    """A block of `within` with `prefixlen` that no route or address of the host covers and no
    other run has claimed, chosen from an offset keyed on this run's id, and claimed for the run."""
    candidates = list(ipaddress.IPv4Network(within).subnets(new_prefix=prefixlen))
    start = int(RUN_ID, 16) % len(candidates)
    if not _enabled():
        return candidates[start]  # nothing of this run will be made on the host
    _hold_run_lock()
    fd = os.open(LEDGERS / ".claims", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one claimer at a time on the host
        taken = _host_networks() + _claimed()
        for block in candidates[start:] + candidates[:start]:
            if not any(block.overlaps(other) for other in taken):
                record("net", str(block))
                return block
    finally:
        os.close(fd)
    raise RuntimeError(f"every /{prefixlen} of {within} is taken on this host")
