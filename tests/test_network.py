"""Bridge networking on the real kernel: each test is one claim of README "Networking".

The internet is played by an "outside world" network namespace this module makes (`jnb-test-out-*`),
joined to the host by a veth (a transit /30 of 198.18.0.0/17, from the benchmarking range RFC 2544
reserves) and routed from the host: a web server on 198.19.<n>.10, a stand-in for a cloud metadata
service on a link-local 169.254.<n>.<m>, the same server on a private (RFC 1918) address of each
range and a CGNAT (RFC 6598) one. No test sends a packet anywhere else: every address a job or the
test tries is an address of the host, of a job, or of that namespace.

Every address block (those, whose host routes go with the veth, and the agents' job subnets) is
claimed for this run (`testrun.claim`): free of the host's routes and of other runs' claims, so
suites running at once on one host do not collide.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

import testrun
from agentproc import TEST_PREFIX, AgentProcess, Api, running_agent
from netlab import joined_namespace
from waiting import wait_until
from joblet_agent.jobs import etcfiles
from joblet_agent.network import firewall
from joblet_agent.sandbox import landlock
from joblet_agent.sandbox.launcher import IDLE_STAGE_NAME
from joblet_agent.paths import AgentPaths

TRANSIT_BLOCK = testrun.claim("198.18.0.0/17", 29)  # a /29 of its own: the setup failure test needs it
TRANSIT = ipaddress.IPv4Network(f"{TRANSIT_BLOCK.network_address}/30")
TRANSIT_HOST, TRANSIT_OUTSIDE, TRANSIT_PREFIX = str(TRANSIT[1]), str(TRANSIT[2]), 30
SERVER_BLOCK = testrun.claim("198.19.128.0/17", 24)
SERVER = str(SERVER_BLOCK[10])  # the "internet" web server, via the outside namespace
METADATA = str(testrun.claim("169.254.16.0/20", 32)[0])  # link-local, like 169.254.169.254, but not the real one
# The same web server on private (RFC 1918) and CGNAT (RFC 6598) addresses: a LAN, a cloud VPC
PRIVATE_BLOCKS = tuple(testrun.claim(within, 24) for within in
                       ("10.233.0.0/16", "172.31.0.0/16", "192.168.128.0/17", "100.72.0.0/16"))
PRIVATE = tuple(str(block[10]) for block in PRIVATE_BLOCKS)
SERVER_PORT = 8080
DNS_PORT = 53                     # the outside world also answers on 53 (TCP), as a nameserver would
JOB_SUBNET = str(testrun.claim("10.232.0.0/16", 24))  # the module agent's bridge subnet (configured)
GATEWAY = str(ipaddress.IPv4Network(JOB_SUBNET)[1])
SMALL_SUBNET = str(testrun.claim("10.232.0.0/16", 29))  # 5 job addresses
OWN_SUBNETS = tuple(str(testrun.claim("10.232.0.0/16", 24)) for _ in range(2))  # agents of a test's own
VETH_NAME = re.compile(r"^jnb[0-9a-f]{12}$")

pytestmark = pytest.mark.root

# A connection probe run inside jobs and inside the outside namespace: one JSON line, target -> outcome.
# "timeout" means the SYN was dropped on the way; "refused" means a host answered with a reset.
PROBE = r'''
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def probe(target):
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(float(sys.argv[1]))
    try:
        s.connect((host, int(port)))
        s.sendall(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return "connected:" + data.decode(errors="replace").split("\r\n\r\n", 1)[-1]
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return "error:%d" % exc.errno
    finally:
        s.close()
with ThreadPoolExecutor(16) as pool:
    print(json.dumps(dict(zip(sys.argv[2:], pool.map(probe, sys.argv[2:])))))
'''

# The outside world's web server: it says who it saw (the job's address is masqueraded).
SERVER_PROGRAM = r'''
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("outside world; client=%s\n" % self.client_address[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
import threading
for port in sys.argv[2:]:
    server = http.server.ThreadingHTTPServer(("0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
'''

# A job that listens on 0.0.0.0:9000, prints its address, and reports every connection it accepts.
LISTENER = r'''
import socket, sys, time
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect(("198.19.77.10", 9))  # picks the source address; a UDP connect sends nothing
me = probe.getsockname()[0]
srv = socket.socket()
srv.bind(("0.0.0.0", 9000))
srv.listen(16)
self_check = socket.create_connection((me, 9000), timeout=2)
srv.accept()[0].close()
self_check.close()
print("address", me, flush=True)
srv.settimeout(0.5)
deadline = time.time() + float(sys.argv[1])
while time.time() < deadline:
    try:
        conn, peer = srv.accept()
    except socket.timeout:
        continue
    print("accepted", peer[0], flush=True)
    conn.close()
'''


# ---- the outside world -------------------------------------------------------------------------


@dataclass
class Outside:
    name: str
    host_veth: str
    server: subprocess.Popen[bytes]

    def probe(self, *targets: str, timeout: float = 1.5) -> dict[str, str]:
        """Connections made from inside the outside namespace (not subject to the agent's rules)."""
        out = subprocess.run(["nsenter", f"--net=/run/netns/{self.name}", sys.executable, "-c", PROBE,
                              str(timeout), *targets], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    tag = secrets.token_hex(3)
    name, host_veth = f"{TEST_PREFIX}out-{tag}", f"{TEST_PREFIX}o{tag[:5]}"
    with joined_namespace(name, host_veth, TRANSIT_HOST, TRANSIT_OUTSIDE, TRANSIT_PREFIX) as ns:
        lo = ns.link_lookup(ifname="lo")[0]
        for address in (SERVER, METADATA, *PRIVATE):
            ns.addr("add", index=lo, address=address, prefixlen=32)
        ns.route("add", dst=JOB_SUBNET, gateway=TRANSIT_HOST)  # lets it *try* to reach jobs
        with IPRoute() as ipr:  # these routes go with the veth
            for address in (SERVER, METADATA, *PRIVATE):
                ipr.route("add", dst=f"{address}/32", gateway=TRANSIT_OUTSIDE)
        server = subprocess.Popen(["nsenter", f"--net=/run/netns/{name}", sys.executable, "-c", SERVER_PROGRAM,
                                   str(SERVER_PORT), str(DNS_PORT)], start_new_session=True)
        try:
            world = Outside(name=name, host_veth=host_veth, server=server)
            wait_until(lambda: all(v.startswith("connected") for v in world.probe(
                           f"{SERVER}:{SERVER_PORT}", f"{SERVER}:{DNS_PORT}", timeout=0.5).values()),
                       timeout=20, interval=0.1, message="the outside world's web server did not start")
            yield world
        finally:
            server.kill()
            server.wait()


# ---- agents ------------------------------------------------------------------------------------


def agent_names(agent: AgentProcess) -> tuple[str, str]:
    """(bridge, nftables table) of an agent, as the agent derives them."""
    tag = AgentPaths.at(agent.root).cgroup_parent().removeprefix("jnb-")
    return f"jnb-br-{tag}", f"jnb_{tag}"


@pytest.fixture(scope="module")
def net_agent(outside: Outside) -> Iterator[AgentProcess]:
    with running_agent(f"network:\n  subnet: {JOB_SUBNET}\n") as agent:
        yield agent
        agent.stop()
        bridge, table = agent_names(agent)
        left = network_leftovers(bridge)
        assert not left, f"the agent left things behind: {left}"
        assert not firewall.exists(table), "the agent's nftables table outlived it"


@pytest.fixture
def net_api(net_agent: AgentProcess) -> Api:
    return net_agent.api()


def network_leftovers(bridge: str) -> list[str]:
    found = []
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=bridge)
        if index:
            found.append(f"bridge {bridge}")
            found += [f"bridge port {p.get('ifname')}" for p in ipr.get_links(master=index[0])]
        found += [f"veth {link.get('ifname')}" for link in ipr.get_links()
                  if VETH_NAME.match(link.get("ifname") or "") and link.get("master") in (None, *index)]
    return found


def probe_job(api: Api, *targets: str, timeout: float = 1.5, network: str = "bridge") -> dict[str, str]:
    result = api.run(command=["python3", "-c", PROBE, str(timeout), *targets], network=network)
    assert result.record["status"] == "COMPLETED", result.explain()
    return json.loads(result.stdout)


def host_addresses(agent: AgentProcess, world: Outside) -> list[str]:
    """Every IPv4 address of the host but loopback: the bridge gateway, eth0, the transit... Not
    those of other agents' bridges or other tests' veths (`jnb*`), which may go away meanwhile."""
    ours = {agent_names(agent)[0], world.host_veth}
    with IPRoute() as ipr:
        return sorted({a.get("address") for a in ipr.get_addr(family=socket.AF_INET)
                       if a.get("label") in ours or not (a.get("label") or "").startswith("jnb")} - {"127.0.0.1"})


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP service of the host on 0.0.0.0 (every address): it greets whoever connects."""
    srv = socket.socket()
    srv.bind(("0.0.0.0", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)  # the probe's request; closing with it unread would reset
                    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhost listener\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        srv.close()


# ---- what a bridge job can reach ---------------------------------------------------------------


def test_bridge_job_reaches_the_outside_world_behind_nat(net_api: Api) -> None:
    target = f"{SERVER}:{SERVER_PORT}"
    seen = probe_job(net_api, target, timeout=5)[target]
    assert seen.startswith("connected:outside world"), seen
    assert f"client={TRANSIT_HOST}" in seen, f"the job's address was not masqueraded: {seen}"


def test_bridge_job_cannot_reach_a_host_listener_on_0_0_0_0(net_api: Api, net_agent: AgentProcess,
                                                            outside: Outside, host_listener: int) -> None:
    # The control: the listener answers on the host's address from anywhere that is not a job.
    assert outside.probe(f"{TRANSIT_HOST}:{host_listener}")[f"{TRANSIT_HOST}:{host_listener}"].startswith(
        "connected:host listener")
    targets = [f"{address}:{host_listener}" for address in host_addresses(net_agent, outside)]
    assert f"{GATEWAY}:{host_listener}" in targets
    outcome = probe_job(net_api, *targets)
    assert outcome == {t: "timeout" for t in targets}, outcome


def test_bridge_job_cannot_reach_the_agents_port(net_api: Api, net_agent: AgentProcess, outside: Outside) -> None:
    # Without the rules a host address would answer the SYN with a reset ("refused", as it does
    # for the outside namespace); from a job the SYN must vanish.
    assert outside.probe(f"{TRANSIT_HOST}:{net_agent.port}") == {f"{TRANSIT_HOST}:{net_agent.port}": "refused"}
    targets = [f"{address}:{net_agent.port}" for address in host_addresses(net_agent, outside)]
    outcome = probe_job(net_api, *targets)
    assert outcome == {t: "timeout" for t in targets}, outcome


def test_bridge_job_cannot_reach_link_local_metadata(net_api: Api) -> None:
    target = f"{METADATA}:{SERVER_PORT}"
    with socket.create_connection((METADATA, SERVER_PORT), timeout=5):
        pass  # the control: the host itself reaches the stand-in metadata service
    assert probe_job(net_api, target) == {target: "timeout"}


def test_bridge_job_cannot_reach_private_or_cgnat_networks_by_default(net_api: Api) -> None:
    targets = [f"{address}:{SERVER_PORT}" for address in PRIVATE]
    for address in PRIVATE:
        with socket.create_connection((address, SERVER_PORT), timeout=5):
            pass  # the control: the host itself reaches each of them
    assert probe_job(net_api, *targets) == {t: "timeout" for t in targets}


@pytest.fixture
def own_net_agent(outside: Outside) -> Iterator[Any]:
    """Agents with a network config of a test's own, each removed with everything it made."""
    with contextlib.ExitStack() as stack:
        def start(network: str) -> AgentProcess:
            agent = stack.enter_context(running_agent(f"network:\n{network}"))
            stack.callback(lambda: _no_network_left(agent))
            return agent
        yield start


def _no_network_left(agent: AgentProcess) -> None:
    agent.stop()
    left = network_leftovers(agent_names(agent)[0])
    assert not left, f"the agent left things behind: {left}"


def test_the_nameservers_of_bridge_jobs_stay_reachable_on_port_53_only(own_net_agent: Any) -> None:
    nameserver = PRIVATE[0]
    agent = own_net_agent(f"  subnet: {OWN_SUBNETS[0]}\n  dns: [{nameserver}]\n")
    dns, web = f"{nameserver}:{DNS_PORT}", f"{nameserver}:{SERVER_PORT}"
    outcome = probe_job(agent.api(), dns, web, f"{PRIVATE[1]}:{DNS_PORT}")
    assert outcome[dns].startswith("connected:outside world"), outcome
    assert (outcome[web], outcome[f"{PRIVATE[1]}:{DNS_PORT}"]) == ("timeout", "timeout"), outcome


def test_allow_opens_a_private_network(own_net_agent: Any) -> None:
    agent = own_net_agent(f"  subnet: {OWN_SUBNETS[1]}\n  allow: [{PRIVATE_BLOCKS[0]}, {SERVER_BLOCK}]\n")
    targets = [f"{address}:{SERVER_PORT}" for address in (*PRIVATE, SERVER)]
    outcome = probe_job(agent.api(), *targets)
    opened = {f"{PRIVATE[0]}:{SERVER_PORT}", f"{SERVER}:{SERVER_PORT}"}
    assert all(outcome[t].startswith("connected:outside world") for t in opened), outcome
    assert all(outcome[t] == "timeout" for t in set(targets) - opened), outcome


def test_bridge_job_has_loopback_and_eth0_and_no_ipv6(net_api: Api) -> None:
    program = ("import socket, errno\n"
               "print(sorted(n for _, n in socket.if_nameindex()))\n"
               "print(repr(open('/proc/net/if_inet6').read()))\n"
               "s = socket.socket(socket.AF_INET6)\n"
               "try:\n    s.connect(('fd00::2', 80)); print('connected')\n"
               "except OSError as e:\n    print(errno.errorcode[e.errno])\n")
    result = net_api.run(command=["python3", "-c", program], network="bridge")
    assert result.record["status"] == "COMPLETED", result.explain()
    names, inet6, connect = result.stdout.splitlines()
    assert (names, inet6) == ("['eth0', 'lo']", "''"), result.stdout  # no IPv6 address at all, not even ::1
    assert connect in ("EADDRNOTAVAIL", "ENETUNREACH"), result.stdout


def test_none_job_has_only_loopback(net_api: Api) -> None:
    program = "import socket; print([n for _, n in socket.if_nameindex()]); print(repr(open('/etc/resolv.conf').read()))"
    result = net_api.run(command=["python3", "-c", program], network="none")
    assert result.record["status"] == "COMPLETED", result.explain()
    assert result.stdout.splitlines() == ["['lo']", "''"]
    target = f"{SERVER}:{SERVER_PORT}"
    # the namespace answers: no route (with network.none_tcp: refuse Landlock refuses first,
    # tests/test_landlock_sandbox.py)
    assert probe_job(net_api, target, network="none") == {target: f"error:{errno.ENETUNREACH}"}


def test_landlock_leaves_a_bridge_jobs_tcp_to_the_firewall(net_api: Api) -> None:
    """The same status job as tests/test_landlock_sandbox.py, with bridge: writes and scopes as in
    any job, TCP to its own loopback answered by the stack (refused), not by Landlock."""
    script = (Path(__file__).parent / "escape" / "landlock_status.py").read_text()
    result = net_api.run(script=script, network="bridge")
    assert result.record["status"] == "COMPLETED", result.explain()
    status = json.loads(result.stdout.split("LANDLOCK ", 1)[1])
    assert status["tcp_connect_loopback"] == "ECONNREFUSED", status
    assert status["write_proc_self_comm"] == ("EACCES" if landlock.abi() >= 1 else "success"), status


def test_bridge_job_gets_a_copy_of_resolv_conf_without_loopback_servers(net_api: Api) -> None:
    result = net_api.run(command=["sh", "-c", "cat /etc/resolv.conf; echo ---; cat /proc/self/mountinfo"],
                         network="bridge")
    assert result.record["status"] == "COMPLETED", result.explain()
    expected = etcfiles._resolv_conf()
    resolv, _, mountinfo = result.stdout.partition("---\n")
    assert resolv == expected
    assert not [line for line in mountinfo.splitlines() if line.split()[4] == "/etc/resolv.conf"]  # not a mount
    assert not re.search(r"nameserver\s+(127\.|::1)", resolv)


# ---- jobs and each other -----------------------------------------------------------------------


@dataclass
class ListeningJob:
    id: str
    address: str


@pytest.fixture
def listening_job(net_api: Api) -> Iterator[ListeningJob]:
    job_id = net_api.submit(command=["python3", "-c", LISTENER, "60"], network="bridge")

    def address() -> str | None:
        out = "".join(e.get("data", "") for e in net_api.events(job_id, follow=False) if e["type"] == "stdout")
        found = re.search(r"^address (\S+)$", out, re.M)
        if any(e["type"] == "exit" for e in net_api.events(job_id, follow=False)):
            pytest.fail(f"the listening job ended early: {net_api.events(job_id, follow=False)}")
        return found.group(1) if found else None

    job = ListeningJob(job_id, wait_until(address, timeout=30, interval=0.1,
                                          message=lambda: net_api.events(job_id, follow=False)))
    try:
        yield job
    finally:
        net_api.call("POST", f"/v1/jobs/{job_id}/stop")
        events = net_api.events(job_id)
        accepted = [ln for e in events if e["type"] == "stdout" for ln in e["data"].splitlines()
                    if ln.startswith("accepted")]
        assert not accepted, f"someone reached the listening job: {accepted}"


def test_two_bridge_jobs_cannot_reach_each_other(net_api: Api, listening_job: ListeningJob) -> None:
    assert listening_job.address in _subnet_hosts()
    other, outside_server = f"{listening_job.address}:9000", f"{SERVER}:{SERVER_PORT}"
    outcome = probe_job(net_api, other, outside_server, timeout=3)
    assert outcome[outside_server].startswith("connected:outside world"), outcome  # the prober has a network
    assert outcome[other] in ("timeout", "error:113"), outcome  # EHOSTUNREACH: not even ARP gets across


def test_nothing_outside_can_connect_to_a_bridge_job(outside: Outside, listening_job: ListeningJob) -> None:
    target = f"{listening_job.address}:9000"
    assert outside.probe(target) == {target: "timeout"}
    with pytest.raises(OSError):  # the host itself: the output chain refuses to send (EPERM)
        socket.create_connection((listening_job.address, 9000), timeout=1.5).close()


def _subnet_hosts() -> set[str]:
    import ipaddress

    return {str(a) for a in ipaddress.ip_network(JOB_SUBNET).hosts()}



def test_operator_allow_list_deny_list_and_dns(outside: Outside) -> None:
    server = f"{SERVER}:{SERVER_PORT}"
    with running_agent("network:\n  allow: [203.0.113.0/24]\n  dns: [203.0.113.53]\n") as agent:
        api = agent.api()
        assert probe_job(api, server) == {server: "timeout"}  # not on the allow list
        result = api.run(command=["cat", "/etc/resolv.conf"], network="bridge")
        assert result.stdout == "nameserver 203.0.113.53\n"
    with running_agent(f"network:\n  deny: [{SERVER}/32]\n") as agent:
        assert probe_job(agent.api(), server) == {server: "timeout"}

# ---- lifecycle ---------------------------------------------------------------------------------


def test_nothing_is_left_after_50_bridge_jobs(net_agent: AgentProcess) -> None:
    bridge, table = agent_names(net_agent)
    net_agent.api().run(command=["/bin/true"], network="bridge")  # the bridge and table exist from here on
    rules_before = firewall.list_table(table)
    assert rules_before

    def one(_: int) -> str:
        result = net_agent.api().run(command=["/bin/true"], network="bridge")
        return result.record["status"] + " " + str(result.record.get("message"))

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses == ["COMPLETED None"] * 50
    wait_until(lambda: not _bridge_leftovers(net_agent, bridge), timeout=10, interval=0.1,  # veths are deleted
               message=lambda: _bridge_leftovers(net_agent, bridge))  # in the background, ~20 ms each
    assert firewall.list_table(table) == rules_before  # no per-job rules, nothing added or left


def _bridge_leftovers(agent: AgentProcess, bridge: str) -> list[str]:
    found = [x for x in network_leftovers(bridge) if x != f"bridge {bridge}"]
    with IPRoute() as ipr:
        found += [f"address {a.get('address')}" for a in ipr.get_addr(family=socket.AF_INET)
                  if a.get("address") in _subnet_hosts() and a.get("address") != GATEWAY]
    assert agent.proc is not None
    host_ns = os.stat("/proc/self/ns/net").st_ino
    for pid in _process_tree(agent.proc.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == IDLE_STAGE_NAME:
                continue  # a sandbox stage waiting for its next job, in fresh namespaces of its own
            if os.stat(f"/proc/{pid}/ns/net").st_ino != host_ns:
                found.append(f"process {pid} in another network namespace")
        except FileNotFoundError:
            pass
    return found


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def test_addresses_are_freed_and_reused_and_never_shared() -> None:
    with running_agent(f"network:\n  subnet: {SMALL_SUBNET}\n") as agent:  # 5 job addresses
        api = agent.api()
        for _ in range(12):  # more jobs than addresses, one after the other
            result = api.run(command=["/bin/true"], network="bridge")
            assert result.record["status"] == "COMPLETED", result.explain()
        sleepers = [api.submit(command=["sleep", "30"], network="bridge") for _ in range(5)]
        for job_id in sleepers:
            api.wait_for_status(job_id, "RUNNING", timeout=30)
        sixth = api.run(command=["/bin/true"], network="bridge")
        assert sixth.record["status"] == "FAILED" and sixth.record["reason"] == "setup"
        assert f"addresses of {SMALL_SUBNET} are held" in sixth.record["message"]
        for job_id in sleepers:
            api.call("POST", f"/v1/jobs/{job_id}/stop")
            api.events(job_id)


def test_bridge_setup_failure_fails_the_job_with_reason_setup(outside: Outside) -> None:
    with running_agent(f"network:\n  subnet: {TRANSIT_BLOCK}\n") as agent:  # overlaps the outside world's route
        result = agent.api().run(command=["/bin/true"], network="bridge")
        assert (result.record["status"], result.record["reason"]) == ("FAILED", "setup"), result.explain()
        assert f"overlaps the host's route to {TRANSIT}" in result.record["message"]


def test_clean_stop_removes_the_bridge_and_the_table() -> None:
    with running_agent("") as agent:
        bridge, table = agent_names(agent)
        try:
            assert agent.api().run(command=["/bin/true"], network="bridge").record["status"] == "COMPLETED"
            assert network_leftovers(bridge) == [f"bridge {bridge}"] and firewall.exists(table)
        finally:
            agent.stop()
        assert network_leftovers(bridge) == [] and not firewall.exists(table)


def test_startup_sweep_removes_what_a_killed_agent_left() -> None:
    """A killed agent's bridge job outlives it (live restore); once that job is gone too (its
    holder killed while no agent ran), the next start removes the bridge, its ports and the table."""
    with running_agent("", stop_jobs=False) as agent:
        bridge, table = agent_names(agent)
        api = agent.api()
        job_id = api.submit(command=["sleep", "60"], network="bridge")
        api.wait_for_status(job_id, "RUNNING", timeout=30)
        agent.stop(signal.SIGKILL)
        assert f"bridge {bridge}" in network_leftovers(bridge) and firewall.exists(table)
        holder = json.loads((agent.root / "state" / "jobs" / job_id / "holder.json").read_text())
        os.kill(holder["pid"], signal.SIGKILL)
        agent.start()
        assert network_leftovers(bridge) == [] and not firewall.exists(table)
        assert "'bridge': 1" in agent.log_path.read_text() and "'table': 1" in agent.log_path.read_text()
        assert agent.api().record(job_id)["reason"] == "lost"
    assert network_leftovers(bridge) == [] and not firewall.exists(table)


def test_an_agent_whose_jobs_never_asked_for_a_bridge_loads_no_netlink_library() -> None:
    """The start-up sweep and the shutdown find no bridge and remove none (nor a table), and do
    it without pyroute2: 190 modules, about 8.5 MB that an idle agent would otherwise keep."""
    code = ("import sys, tempfile\n"
            "from pathlib import Path\n"
            "from joblet_agent.config import NetworkConfig\n"
            "from joblet_agent.network.bridge import NetworkManager\n"
            "from joblet_agent.paths import AgentPaths\n"
            f"root = Path(tempfile.mkdtemp(prefix={TEST_PREFIX!r}))\n"
            "network = NetworkManager(AgentPaths.at(root), NetworkConfig())\n"
            "print(network.sweep(), network.close(), 'pyroute2' in sys.modules)\n"
            "root.rmdir()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    nothing = {"veths": 0, "bridge": 0, "table": 0}
    assert out.split("\n")[0] == f"{nothing} {nothing} False", out


# ---- the notebook ------------------------------------------------------------------------------


def test_notebook_cell_with_network_bridge_fetches_from_outside_but_not_the_host(
        net_agent: AgentProcess, tmp_path: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    import joblet_nb

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "joblet_nb")
    before = {name: getattr(joblet_nb._magics, name) for name in ("url", "token_file")}
    token = tmp_path / "token"
    token.write_text(net_agent.user_token + "\n")
    token.chmod(0o600)
    cell = (f"%%joblet run --network bridge\n"
            f"import socket, urllib.request\n"
            f"print(urllib.request.urlopen('http://{SERVER}:{SERVER_PORT}/', timeout=10).read().decode(), end='')\n"
            f"s = socket.socket()\n"
            f"s.settimeout(1.5)\n"
            f"try:\n    s.connect(('{GATEWAY}', {net_agent.port})); print('reached the host')\n"
            f"except OSError as exc:\n    print('host unreachable:', type(exc).__name__)\n")
    try:
        shell.run_line_magic("config", f"JobletMagics.url = {net_agent.url!r}")
        shell.run_line_magic("config", f"JobletMagics.token_file = {str(token)!r}")
        with capture_output() as cap:
            result = shell.run_cell(cell)
    finally:
        for name, value in before.items():
            shell.run_line_magic("config", f"JobletMagics.{name} = {value!r}")
    assert result.error_in_exec is None, cap.stderr
    assert cap.stdout == f"outside world; client={TRANSIT_HOST}\nhost unreachable: TimeoutError\n"
