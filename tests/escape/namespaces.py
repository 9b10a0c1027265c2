"""Attack: share a namespace with the host. The job's mnt, uts, ipc, net, pid and cgroup namespaces
differ from the host's (PROBE_HOST_NS: name=inode pairs the test read from its own /proc/self/ns)."""
import os

from probelib import expect, finish

host = dict(kv.split("=") for kv in os.environ["PROBE_HOST_NS"].split(","))
for name in ("mnt", "uts", "ipc", "net", "pid", "cgroup"):
    link = os.readlink(f"/proc/self/ns/{name}")
    inode = link.split("[")[1].rstrip("]")
    expect(inode != host[name], f"{name}: job {link}, host {name}:[{host[name]}]")
finish()
