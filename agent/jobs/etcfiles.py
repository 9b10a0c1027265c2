"""The few /etc files a job gets: fresh copies written for it, never the host's files.

passwd and group name only root, the job user and nobody; there is no shadow file at all. Public
read-only material (CA certificates, the loader cache, the time zone) is bound read-only.
"""

from __future__ import annotations

import ipaddress
import os

from ..sandbox.spec import Mount

JOB_USER = "job"
# The host's list first; systemd-resolved's upstream list if the first has only a local stub.
RESOLV_SOURCES = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
_configured_nameservers: list[str] = []


def etc_files(uid: int, gid: int, hostname: str, network: str) -> dict[str, str]:
    files = {
        "passwd": (f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                   f"{JOB_USER}:x:{uid}:{gid}:joblet job:/work:/bin/sh\n"
                   f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        "group": f"root:x:0:\n{JOB_USER}:x:{gid}:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "hostname": hostname + "\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\n",
        "resolv.conf": _resolv_conf() if network != "none" else "",
    }
    return files


def use_nameservers(servers: list[str]) -> None:
    """Nameservers for bridge jobs from the agent's config (network.dns); empty: the host's."""
    _configured_nameservers[:] = servers


def nameservers() -> list[str]:
    """The nameservers a bridge job's resolv.conf names (the firewall lets port 53 through to them)."""
    return [line.split()[1] for line in _resolv_conf().splitlines() if line.startswith("nameserver")]


def _resolv_conf() -> str:
    """A bridge job's resolver list: the configured nameservers, else a copy of the host's.

    From the host's list, nameservers a job cannot use are dropped: loopback ones (a job's
    127.0.0.1 is its own) and IPv6 ones (IPv6 is off in jobs). If none is left, e.g. with
    systemd-resolved's stub at 127.0.0.53, the upstream list that resolver keeps is copied instead.
    A nameserver on an address of the host itself stays unreachable (the firewall drops all traffic
    to the host): set network.dns in the config then."""
    if _configured_nameservers:
        return "".join(f"nameserver {server}\n" for server in _configured_nameservers)
    first = ""
    for path in RESOLV_SOURCES:
        text = _usable_resolv_lines(path)
        if "nameserver" in text:
            return text
        first = first or text
    return first


def _usable_resolv_lines(path: str) -> str:
    try:
        with open(path) as f:
            lines = [ln for ln in f if ln.startswith(("nameserver", "search", "options"))]
    except OSError:
        return ""
    return "".join(ln for ln in lines if not ln.startswith("nameserver") or _reachable_nameserver(ln))


def _reachable_nameserver(line: str) -> bool:
    try:
        address = ipaddress.ip_address(line.split()[1].split("%")[0])
    except (IndexError, ValueError):
        return False
    return address.version == 4 and not address.is_loopback and not address.is_unspecified


BOUND = ("/etc/ssl/certs", "/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives")
Stamp = tuple[tuple[int, int, int, int, int] | None, ...]
_resolved: tuple[tuple[str, ...], Stamp, list[tuple[str, str]]] | None = None


def etc_binds(paths: tuple[str, ...] = BOUND) -> list[Mount]:
    """The read-only binds of the host's public /etc material that exists, each from where its
    links lead. Resolved again only when a path's own entry or what it leads to has changed (two
    stats each): resolving every link on the way cost about 20 stats and 78 us per job."""
    global _resolved
    stamp = tuple(_stamp(path) for path in paths)
    if _resolved is None or _resolved[0] != paths or _resolved[1] != stamp:
        found = [(os.path.realpath(path), path) for path in paths if os.path.exists(path)]
        _resolved = (paths, stamp, found)
    return [Mount(source=source, target=target, readonly=True) for source, target in _resolved[2]]


def _stamp(path: str) -> tuple[int, int, int, int, int] | None:
    """The entry at `path` (a link is a new inode when it is replaced) and the file it leads to."""
    try:
        entry, target = os.lstat(path), os.stat(path)
    except OSError:
        return None
    return entry.st_dev, entry.st_ino, entry.st_mtime_ns, target.st_dev, target.st_ino
