"""Attack: read the host's secrets from the sandbox's /etc and elsewhere.

/etc holds only the agent's copies: no shadow files, no ssh host keys, a passwd with only root,
the job user and nobody (none of the host's own users: PROBE_HOST_USERS), not the host's passwd
(PROBE_HOST_PASSWD_SHA256). No /root, /home, /var. The reaper's (PID 1's) environment, which is
the agent's, cannot be read.
"""
import hashlib
import os

from probelib import ename, err, expect, finish, note

ETC_ALLOWED = {"passwd", "group", "hosts", "hostname", "nsswitch.conf", "resolv.conf", "ssl", "localtime",
               "ld.so.cache", "alternatives"}
etc = set(os.listdir("/etc"))
note(f"/etc holds {sorted(etc)}")
expect(etc <= ETC_ALLOWED, f"/etc has nothing but the agent's copies: extra {sorted(etc - ETC_ALLOWED)}")
for path in ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/ssh", "/etc/sudoers",
             "/etc/ssl/private", "/etc/pam.d", "/etc/machine-id", "/root", "/home", "/var", "/opt", "/srv",
             "/etc/joblet", "/run", "/boot"):
    expect(not os.path.lexists(path), f"{path} is absent")

users = {line.split(":")[0] for line in open("/etc/passwd") if line.strip()}
note(f"passwd users: {sorted(users)}")
expect(users <= {"root", "job", "nobody"}, "passwd names only root, the job user and nobody")
host_users = set(filter(None, os.environ["PROBE_HOST_USERS"].split(",")))
leaked = (host_users & users) - {"root", "nobody"}
expect(not leaked, f"no host user is listed: {sorted(leaked)}")
digest = hashlib.sha256(open("/etc/passwd", "rb").read()).hexdigest()
expect(digest != os.environ["PROBE_HOST_PASSWD_SHA256"], "/etc/passwd is not the host's file")

for entry in ("environ", "cmdline", "maps", "mem", "root/", "cwd/", "fd/"):
    path = f"/proc/1/{entry}"
    e = err(lambda p: os.listdir(p) if p.endswith("/") else open(p, "rb").read(1), path)
    if entry == "cmdline":
        note(f"read {path}: {ename(e)}")
        continue
    expect(e is not None, f"read {path} (the root reaper): {ename(e)}")

found = []
for top in ("/etc", "/usr/local", "/work", "/tmp", "/dev/shm"):
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            if name.startswith(("ssh_host_", "id_rsa", "id_ed25519", "tokens")) or name.endswith((".pem.key", ".key")):
                found.append(os.path.join(dirpath, name))
expect(not found, f"no key or token files: {found}")
finish()
