"""Network namespaces the tests make: one joined to the host by a veth, and taken down again,
also when the run that made it is killed (the namespace and the veth are in the run's ledger)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pyroute2 import IPRoute, netns

import testrun


@contextlib.contextmanager
def joined_namespace(name: str, host_veth: str, host_ip: str, ns_ip: str, prefixlen: int) -> Iterator[IPRoute]:
    """The namespace `name`, its end of the veth (`uplink`, `ns_ip`) and `lo` up, the host's end
    (`host_veth`, `host_ip`) up; yields a netlink socket in the namespace for more set-up. The veth
    (its routes with it), what runs in the namespace and the namespace go at the end, also after
    a failure."""
    with testrun.owned("netns", name), testrun.owned("link", host_veth):
        netns.create(name)
        with IPRoute() as ipr:
            ns_fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                ipr.link("add", ifname=host_veth, kind="veth", peer={"ifname": "uplink", "net_ns_fd": ns_fd})
            finally:
                os.close(ns_fd)
            index = ipr.link_lookup(ifname=host_veth)[0]
            ipr.addr("add", index=index, address=host_ip, prefixlen=prefixlen)
            ipr.link("set", index=index, state="up")
        with IPRoute(netns=name) as ns:
            lo, uplink = ns.link_lookup(ifname="lo")[0], ns.link_lookup(ifname="uplink")[0]
            ns.link("set", index=lo, state="up")
            ns.addr("add", index=uplink, address=ns_ip, prefixlen=prefixlen)
            ns.link("set", index=uplink, state="up")
            yield ns
