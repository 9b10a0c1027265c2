"""The few /etc files a job gets: fresh copies written for it, never the host's files.

passwd and group name only root, the job user and nobody; there is no shadow file at all. Public
read-only material (CA certificates, the loader cache, the time zone) is bound read-only.
"""

from __future__ import annotations

import os

from .sandbox.spec import Mount

JOB_USER = "job"


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


def _resolv_conf() -> str:
    """A copy of the host's resolver list, loopback resolvers dropped (unreachable from a job)."""
    try:
        with open("/etc/resolv.conf") as f:
            lines = [ln for ln in f if ln.startswith(("nameserver", "search", "options"))]
    except OSError:
        return ""
    return "".join(ln for ln in lines if not ln.split()[1:2] or not ln.split()[1].startswith("127."))


def etc_binds() -> list[Mount]:
    binds = []
    for path in ("/etc/ssl/certs", "/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
        if os.path.exists(path):
            binds.append(Mount(source=os.path.realpath(path), target=path, readonly=True))
    return binds
