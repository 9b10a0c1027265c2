"""The cluster key: the agent signs every job it sends to a node, and the node side runs nothing
that is not signed with it.

The key is a root-only file (mode 0600 or stricter, owned by root, not a symlink) with the same
content on the agent's host and on every node, as munge's key is. Only root can read it, so a MAC
made with it proves that root on the agent's host (the agent) wrote the spec; a Slurm user who can
run the node side cannot make one, and the node side refuses anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

KEY_BYTES = 32
DOMAIN = b"jnb-cluster-spec-v1\0"  # a MAC made for something else never verifies as a spec


class ClusterKeyError(Exception):
    """The key file is missing, unreadable, or readable by someone other than root."""


def load_key(path: str) -> bytes:
    """The key, refused unless root owns it, nobody else may read or write it, and it is a regular
    file reached without following a symlink in its last component."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ClusterKeyError(f"cannot open the cluster key {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ClusterKeyError(f"the cluster key {path} is not a regular file")
        if st.st_uid != 0 or st.st_mode & 0o077:
            raise ClusterKeyError(f"the cluster key {path} must be owned by root with mode 0600 or stricter "
                            f"(it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    if len(data) < KEY_BYTES:
        raise ClusterKeyError(f"the cluster key {path} is shorter than {KEY_BYTES} bytes")
    return data


def ensure_key(path: str) -> bytes:
    """Create the key (random, 0600) if it does not exist yet; then load it with every check."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return load_key(path)
    try:
        os.write(fd, os.urandom(KEY_BYTES))
    finally:
        os.close(fd)
    return load_key(path)


def sign(key: bytes, payload: bytes) -> str:
    return hmac.new(key, DOMAIN + payload, hashlib.sha256).hexdigest()


def verify(key: bytes, payload: bytes, mac: str) -> bool:
    return hmac.compare_digest(sign(key, payload), mac if isinstance(mac, str) else "")
