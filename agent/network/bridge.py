"""Bridge networking: one veth per job into the agent's bridge, an address, a route, NAT, rules.

A `none` job keeps the empty network namespace its sandbox was made with (loopback only). For a
`bridge` job the sandbox's init waits on the "go" pipe, and the agent calls `attach()` with the
init's host pid; when the job has ended it calls `release()`. This module does the work in
between, from outside the job:

  attach   1. on first use: the nftables table (firewall.py), the bridge with the gateway address,
              net.ipv4.ip_forward on;
           2. a short-lived thread enters the job's network namespace (setns on
              /proc/<pid>/ns/net), switches IPv6 off there (before eth0 exists, so eth0 never gets
              an IPv6 address) and opens a netlink socket, which stays bound to that namespace.
              The thread then ends: it never does anything else;
           3. the worker thread makes the veth pair from the agent's side: the host end
              `jnb<12 hex of the job id>` already a (down) port of the bridge, its peer `eth0`
              created inside the job's namespace; the port is made isolated
              (IFLA_BRPORT_ISOLATED: no frames between two jobs, even on one bridge), then up;
           4. through the job's socket: eth0's address, up, the default route via the bridge
              address; then it waits until the kernel has brought both ends up.
  release  deletes the host end (the job's end goes with it), then frees the address.

All netlink work runs on worker threads, never on the agent's event loop thread: pyroute2's sync
IPRoute runs an event loop of its own, which cannot run inside the agent's, and setns would move
the whole event loop thread into the job. One worker thread does attach and tear-down in the
agent's namespace; a second deletes veths, which takes the kernel ~20 ms each (RCU grace periods),
so that a finished job never delays the next job's attach or the agent's event loop. An address
returns to the pool only when its veth is gone, and the pool hands addresses out round-robin, so
a new job does not inherit the conntrack and ARP state of the job that had its address just before.

Names are per agent root (the hash of `AgentPaths.cgroup_parent()`): bridge `jnb-br-<hash>`, table
`inet jnb_<hash>`. Without a configured subnet, the first 10.89.<N>.0/24 that no route of the host
covers is used, starting at N = the hash's first byte. Several agents on one host therefore never
touch each other's bridge, rules or addresses.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from . import firewall
from ..config import NetworkConfig
from ..paths import AgentPaths
from ..poll import wait_for
from ..sandbox.libc import CLONE_NEWNET, setns

BRIDGE_PREFIX = "jnb-br-"
VETH_PREFIX = "jnb"
JOB_IFNAME = "eth0"
DEFAULT_SUBNETS = ipaddress.IPv4Network("10.89.0.0/16")  # /24s of it, when none is configured
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
NETLINK_ROUTE = 0
RELEASE_WAIT_S = 5.0

T = TypeVar("T")


class NetworkError(Exception):
    """A bridge job's network could not be set up; the message says what to change."""


@dataclass(frozen=True)
class BridgePlan:
    """What this agent's bridge is made of, fixed when the bridge is made."""

    bridge: str
    subnet: ipaddress.IPv4Network
    ruleset: firewall.Ruleset

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1


def choose_subnet(config: NetworkConfig, tag: str, routes: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The configured subnet, or the first free /24 of 10.89.0.0/16 from the agent's own start."""
    if config.subnet:
        subnet = ipaddress.IPv4Network(config.subnet)
        for route in routes:
            if route.overlaps(subnet):
                raise NetworkError(f"network.subnet {subnet} overlaps the host's route to {route}: "
                                   f"set a free one in the agent's config")
        return subnet
    candidates = list(DEFAULT_SUBNETS.subnets(new_prefix=24))
    start = int(tag[:2], 16)
    for subnet in candidates[start:] + candidates[:start]:
        if not any(route.overlaps(subnet) for route in routes):
            return subnet
    raise NetworkError(f"every /24 of {DEFAULT_SUBNETS} overlaps a route of the host: set network.subnet "
                       f"in the agent's config")


class AddressPool:
    """Host addresses of the subnet (gateway and broadcast excluded), handed out round-robin."""

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        self.subnet = subnet
        self._first = int(subnet.network_address) + 2   # .1 is the gateway
        self._count = subnet.num_addresses - 3          # network, gateway, broadcast
        self._used: set[int] = set()
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> ipaddress.IPv4Address:
        with self._lock:
            for step in range(self._count):
                offset = (self._next + step) % self._count
                if offset not in self._used:
                    self._used.add(offset)
                    self._next = offset + 1
                    return ipaddress.IPv4Address(self._first + offset)
        raise NetworkError(f"all {self._count} addresses of {self.subnet} are held by running bridge jobs: "
                           f"wait for some to end, or give network.subnet a shorter prefix in the config")

    def hold(self, address: ipaddress.IPv4Address) -> None:
        """Mark an address used that a job already has (an adopted job's)."""
        offset = int(address) - self._first
        if not 0 <= offset < self._count:
            raise NetworkError(f"{address} is not a job address of {self.subnet}")
        with self._lock:
            self._used.add(offset)

    def give(self, address: ipaddress.IPv4Address) -> None:
        with self._lock:
            self._used.discard(int(address) - self._first)

    @property
    def in_use(self) -> int:
        with self._lock:
            return len(self._used)


@dataclass
class JobLink:
    veth: str
    address: ipaddress.IPv4Address


class NetworkManager:
    """The agent's bridge mode (jobs.JobNetwork): attach, release, sweep, close."""

    def __init__(self, paths: AgentPaths, config: NetworkConfig,
                 nameservers: Callable[[], list[str]] | None = None) -> None:
        self.config = config
        self.nameservers = nameservers or (lambda: list(config.dns))  # reachable on port 53 only
        self.tag = paths.cgroup_parent().removeprefix("jnb-")  # 8 hex digits of the root's hash
        self.bridge = config.bridge or BRIDGE_PREFIX + self.tag
        self.table = "jnb_" + self.tag
        self.plan: BridgePlan | None = None   # made with the bridge, on first use
        self.pool: AddressPool | None = None
        self._jobs: dict[str, JobLink] = {}
        self._bridge_index: int | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._releaser: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()  # releases not done yet: their addresses come back
        self._local = threading.local()
        self._lock = threading.Lock()

    # ---- the JobNetwork protocol (called on the agent's event loop thread) ------------------

    def attach(self, job_id: str, init_pidfd: int) -> dict[str, Any]:
        """Give the job's namespace (that of the process `init_pidfd` holds: its init, or its
        holder, which shares it) its veth, address and route."""
        return self._on_worker(lambda: self._attach(job_id, init_pidfd))

    def adopt(self, job_id: str, veth: str, address: str) -> None:
        """Take back the link of a job an earlier life of the agent attached (live restore): the
        bridge and the table are loaded again as this agent's (the rules replace themselves in one
        transaction, so connections stay up), the address is marked used."""
        self._on_worker(lambda: self._adopt(job_id, veth, address))

    def release(self, job_id: str) -> None:
        """Schedule the removal of the job's veth; its address is free again once the veth is gone."""
        with self._lock:
            link = self._jobs.pop(job_id, None)
        if link is None:
            return
        future = self._releaser_pool().submit(self._release, link)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    # ---- start-up and shutdown ------------------------------------------------------------

    def sweep(self, keep: frozenset[str] = frozenset()) -> dict[str, int]:
        """Remove what an earlier run of this agent left: its bridge's ports, the bridge, the table;
        with jobs to `keep` (adopted ones), only the ports of other jobs."""
        if keep:
            return self._on_worker(lambda: self._remove_ports(keep))
        return self._on_worker(self._teardown)

    def detach(self) -> None:
        """Shutdown that leaves bridge jobs running: finish pending releases, keep the bridge and
        the table for the next agent, end the worker threads."""
        if self._releaser is not None:
            self._releaser.shutdown(wait=True)
            self._releaser = None
        if self._worker is not None:
            self._on_worker(self._close_socket)
            self._worker.shutdown(wait=True)
            self._worker = None

    def close(self) -> dict[str, int]:
        """Clean shutdown: finish pending releases, then remove the bridge and the table."""
        if self._releaser is not None:
            self._releaser.shutdown(wait=True)
            self._releaser = None
        counts = self._on_worker(self._teardown)
        self._on_worker(self._close_socket)
        assert self._worker is not None
        self._worker.shutdown(wait=True)
        self._worker = None
        return counts

    # ---- worker threads -------------------------------------------------------------------

    def _on_worker(self, fn: Callable[[], T]) -> T:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jnb-net")
        return self._worker.submit(fn).result()

    def _releaser_pool(self) -> ThreadPoolExecutor:
        if self._releaser is None:
            self._releaser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jnb-net-release")
        return self._releaser

    def _ipr(self) -> Any:
        """This worker thread's netlink socket in the agent's namespace."""
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            from pyroute2 import IPRoute

            ipr = self._local.ipr = IPRoute(nlm_echo=True)  # echoes carry the new link's indexes
        return ipr

    def _close_socket(self) -> None:
        ipr = getattr(self._local, "ipr", None)
        if ipr is not None:
            ipr.close()
            self._local.ipr = None

    # ---- attach ---------------------------------------------------------------------------

    def _attach(self, job_id: str, init_pidfd: int) -> dict[str, Any]:
        from pyroute2 import NetlinkError

        plan, pool = self._ensure_bridge()
        try:
            address = pool.take()
        except NetworkError:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                raise
            wait(pending, timeout=RELEASE_WAIT_S)  # ended jobs whose veths are still being deleted
            address = pool.take()
        link = JobLink(veth=VETH_PREFIX + job_id[:12], address=address)
        with self._lock:
            self._jobs[job_id] = link  # from here on, release() cleans up whatever exists
        try:
            ns_fd, sock_fd = _in_namespace(init_pidfd, _enter_job_side)
            try:
                self._wire(link, plan, ns_fd, sock_fd)
            finally:
                os.close(sock_fd)
                os.close(ns_fd)
        except NetlinkError as exc:
            raise NetworkError(f"setting up the job's veth: {os.strerror(exc.code)} ({exc})") from None
        return {"interface": JOB_IFNAME, "address": f"{address}/{plan.subnet.prefixlen}",
                "gateway": str(plan.gateway), "veth": link.veth, "bridge": plan.bridge}

    def _wire(self, link: JobLink, plan: BridgePlan, ns_fd: int, sock_fd: int) -> None:
        """The pair, made from the agent's side with its host end already a (down) bridge port and
        `eth0` in the job's namespace `ns_fd`; the port isolated, then up; then, through `sock_fd`
        (a netlink socket of the job's namespace), eth0's address, up, default route; then wait
        until both ends carry traffic. The kernel echoes the new link (NLM_F_ECHO), with the
        index of its peer, so no lookup is needed."""
        from pyroute2 import IPRoute

        host = self._ipr()
        made = host.link("add", ifname=link.veth, kind="veth", master=self._bridge_index,
                         peer={"ifname": JOB_IFNAME, "net_ns_fd": ns_fd})[0]
        host_index, job_index = made["index"], made.get("link")
        _sysctl(f"/proc/sys/net/ipv6/conf/{link.veth}/disable_ipv6", "1")
        host.brport("set", index=host_index, isolated=1)
        host.link("set", index=host_index, state="up")
        with IPRoute(fileno=os.dup(sock_fd)) as job:  # pyroute2 closes the descriptor it is given
            if not job_index:
                job_index = job.link_lookup(ifname=JOB_IFNAME)[0]
            job.addr("add", index=job_index, address=str(link.address), prefixlen=plan.subnet.prefixlen)
            job.link("set", index=job_index, state="up")
            job.route("add", dst="0.0.0.0/0", gateway=str(plan.gateway))
            # the kernel's link watcher marks a link up a moment later, and its queue is live only
            # then: a packet sent before goes to the no-op qdisc and is lost (a 1 s retransmit)
            wait_for(lambda: _read(f"/sys/class/net/{link.veth}/operstate") == "up", interval_s=0.0002)
            wait_for(lambda: job.link("get", index=job_index)[0].get("operstate") == "UP", interval_s=0.0002)

    def _ensure_bridge(self) -> tuple[BridgePlan, AddressPool]:
        """The bridge, its address and the table, made on first use (rules first, then the bridge)."""
        if self._bridge_index is not None and self.plan is not None and self.pool is not None:
            return self.plan, self.pool
        ipr = self._ipr()
        subnet = choose_subnet(self.config, self.tag, self._host_routes())
        plan = BridgePlan(bridge=self.bridge, subnet=subnet, ruleset=firewall.Ruleset(
            table=self.table, bridge=self.bridge, subnet=str(subnet),
            deny=tuple(self.config.deny), allow=tuple(self.config.allow), dns=tuple(self.nameservers())))
        firewall.load(plan.ruleset)
        found = ipr.link_lookup(ifname=plan.bridge)
        if not found:
            ipr.link("add", ifname=plan.bridge, kind="bridge")
            found = ipr.link_lookup(ifname=plan.bridge)
        index = found[0]
        _sysctl(f"/proc/sys/net/ipv6/conf/{plan.bridge}/disable_ipv6", "1")
        have = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)}
        if (str(plan.gateway), plan.subnet.prefixlen) not in have:
            ipr.addr("add", index=index, address=str(plan.gateway), prefixlen=plan.subnet.prefixlen)
        ipr.link("set", index=index, state="up")
        if _read(IP_FORWARD) != "1":
            _sysctl(IP_FORWARD, "1")
            print("joblet-agent: turned net.ipv4.ip_forward on for bridge jobs (it stays on; README "
                  "'Networking')", file=sys.stderr, flush=True)
        self.plan, self.pool, self._bridge_index = plan, AddressPool(subnet), index
        return plan, self.pool

    def _host_routes(self) -> list[ipaddress.IPv4Network]:
        """Destinations of the host's routes (main table, default route aside), but our bridge's."""
        ipr = self._ipr()
        own = ipr.link_lookup(ifname=self.bridge)
        return [ipaddress.IPv4Network(f"{route.get('dst')}/{route['dst_len']}", strict=False)
                for route in ipr.get_routes(family=2, table=254)
                if route["dst_len"] and route.get("oif") not in own]

    def _adopt(self, job_id: str, veth: str, address: str) -> None:
        _, pool = self._ensure_bridge()
        if not self._ipr().link_lookup(ifname=veth):
            raise NetworkError(f"its veth {veth} is gone")
        link = JobLink(veth=veth, address=ipaddress.IPv4Interface(address).ip)
        pool.hold(link.address)
        with self._lock:
            self._jobs[job_id] = link

    # ---- release and tear-down ------------------------------------------------------------

    def _remove_ports(self, keep: frozenset[str]) -> dict[str, int]:
        """Every port of the bridge but the veths of the jobs in `keep`."""
        counts = {"veths": 0}
        if not _link_exists(self.bridge):
            return counts
        ipr = self._ipr()
        kept = {VETH_PREFIX + job_id[:12] for job_id in keep}
        found = ipr.link_lookup(ifname=self.bridge)
        for port in ipr.get_links(master=found[0]) if found else []:
            if port.get("ifname") not in kept and _delete_link(ipr, port.get("ifname")):
                counts["veths"] += 1
        return counts

    def _release(self, link: JobLink) -> None:
        try:
            _delete_link(self._ipr(), link.veth)
        except Exception as exc:  # noqa: BLE001 - the address stays held; the sweep removes the veth
            print(f"joblet-agent: removing {link.veth}: {exc}", file=sys.stderr, flush=True)
            return
        if self.pool is not None:
            self.pool.give(link.address)

    def _teardown(self) -> dict[str, int]:
        """The bridge's ports, the bridge, the table. Without a bridge (an agent whose jobs never
        asked for one: the usual start-up sweep), pyroute2 is not loaded: 190 modules, about 8.5 MB
        that an idle agent would keep."""
        counts = {"veths": 0, "bridge": 0, "table": 0}
        ipr = self._ipr() if _link_exists(self.bridge) else None
        found = ipr.link_lookup(ifname=self.bridge) if ipr is not None else []
        if ipr is not None and found:
            for port in ipr.get_links(master=found[0]):
                if _delete_link(ipr, port.get("ifname")):
                    counts["veths"] += 1
            counts["bridge"] = int(_delete_link(ipr, self.bridge))
        self.plan, self.pool, self._bridge_index = None, None, None
        counts["table"] = int(firewall.remove(self.table))
        return counts


# ---- in the job's namespace ----------------------------------------------------------------


def _in_namespace(init_pidfd: int, fn: Callable[[], T]) -> tuple[int, T]:
    """On a new thread that enters the network namespace of the init `init_pidfd` holds (setns on
    the pidfd: never /proc/<pid>, whose number may name another process by then) and then ends:
    a descriptor of that namespace, and what `fn` gives there.

    setns(CLONE_NEWNET) moves only the calling thread, so no other thread of the agent is ever
    in a job's namespace, and the thread that was is never reused."""
    box: list[Any] = []

    def run() -> None:
        try:
            setns(init_pidfd, CLONE_NEWNET)
            ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                box.append((ns_fd, fn()))
            except BaseException:
                os.close(ns_fd)
                raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box.append(exc)

    thread = threading.Thread(target=run, name="jnb-net-job", daemon=True)
    thread.start()
    thread.join()
    if isinstance(box[0], ProcessLookupError):
        raise NetworkError("the job's sandbox is gone (its init has ended)")
    if isinstance(box[0], BaseException):
        raise box[0]
    ns_fd, result = box[0]
    if os.fstat(ns_fd).st_ino == os.stat("/proc/thread-self/ns/net").st_ino:
        os.close(ns_fd)
        raise NetworkError("the job's init is not in a network namespace of its own")
    return ns_fd, result


def _enter_job_side() -> int:
    """In the job's namespace: IPv6 off (all and default, so eth0 is born without it), and a
    netlink socket bound to this namespace for the worker thread to use."""
    for scope in ("all", "default"):
        _sysctl(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "1")
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    return sock.detach()



# ---- small helpers -------------------------------------------------------------------------


def _link_exists(name: str) -> bool:
    """Whether this network namespace has a link `name` (an ioctl: no netlink socket, no pyroute2)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _delete_link(ipr: Any, name: str | None) -> bool:
    """Delete a link by name; False if it was already gone."""
    from pyroute2 import NetlinkError

    if not name:
        return False
    found = ipr.link_lookup(ifname=name)
    if not found:
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise
    return True


def _sysctl(path: str, value: str) -> None:
    """Write a sysctl of the calling thread's network namespace; absent IPv6 knobs are fine."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if "/ipv6/" not in path:
            raise


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()
