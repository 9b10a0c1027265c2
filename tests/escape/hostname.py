"""Attack: change the host's name. The job has its own UTS namespace with the sandbox's hostname
(PROBE_SANDBOX_HOSTNAME, not the host's PROBE_HOST_HOSTNAME), and sethostname/setdomainname to the
names it already has fail with EPERM (harmless if they were allowed)."""
import errno
import os
import socket

from probelib import call, ename, expect, finish

name = socket.gethostname()
expect(name == os.environ["PROBE_SANDBOX_HOSTNAME"], f"hostname {name!r} is the sandbox's")
expect(name != os.environ["PROBE_HOST_HOSTNAME"], f"hostname {name!r} is not the host's")
expect(open("/etc/hostname").read().strip() == name, "/etc/hostname agrees")
raw = name.encode()
e = call("sethostname", raw, len(raw))
expect(e == errno.EPERM, f"sethostname({name!r}) (its own name): {ename(e)} (want EPERM)")
domain = open("/proc/sys/kernel/domainname").read().strip().encode()
e = call("setdomainname", domain, len(domain))
expect(e == errno.EPERM, f"setdomainname({domain!r}) (its own name): {ename(e)} (want EPERM)")
finish()
