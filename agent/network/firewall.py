"""The agent's nftables table: the rules that keep bridge jobs away from the host and each other.

The whole table is generated here as text and loaded with one `nft -f -` (one kernel transaction),
and removed the same way. `nft` runs with a fixed argv and no shell; the ruleset goes in on stdin.
python-nftables bindings are not on PyPI in a usable form, and pyroute2's nftables support is too
low-level to be worth it for one table loaded once.

The rules (README "Networking" documents them for operators):
  input    anything that arrives from the bridge for the host itself is dropped: every local
           address (the bridge gateway, services on 0.0.0.0, the agent's port, the host's DNS).
  forward  from the bridge: no IPv6, nothing to the job subnet (another job), link-local
           169.254.0.0/16 and 100.100.100.200 (cloud metadata services), loopback, multicast,
           broadcast, the operator's deny
           list, nothing port-forwarded (DNAT) and, with an allow list, only the listed networks.
           To the bridge: only replies (conntrack established/related); nothing outside starts a
           connection to a job.
  output   the host starts nothing towards a job either; replies only.
  nat      outbound traffic from the job subnet is masqueraded behind the host's address.
A drop in any nftables base chain is final, so another table (iptables-nft, firewalld) cannot
accept what this table drops; it can drop what this table lets through (see README).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

NFT_CANDIDATES = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft")
# Never reachable from a job, whatever the operator lists as allowed.
ALWAYS_DENIED = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
                 "255.255.255.255/32",
                 "100.100.100.200/32")  # a cloud metadata service outside link-local (Alibaba)
# Private networks (RFC 1918) and carrier-grade NAT (RFC 6598): the host's LAN, other VMs, a cloud
# VPC's services. Unreachable unless `network.allow` names (part of) them; the nameservers bridge
# jobs are given stay reachable on port 53.
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
PRIORITY = "filter - 10"  # before the usual filter chains; a drop here is final anyway


class FirewallError(Exception):
    """nft is missing or refused the ruleset; the message says which and why."""


@dataclass(frozen=True)
class Ruleset:
    table: str                      # nftables table name in family inet, e.g. jnb_1a2b3c4d
    bridge: str                     # the agent's bridge device
    subnet: str                     # the job subnet, e.g. 10.89.26.0/24
    deny: Sequence[str] = field(default_factory=tuple)    # more destinations jobs never reach
    allow: Sequence[str] = field(default_factory=tuple)   # if any: the only destinations jobs reach
    dns: Sequence[str] = field(default_factory=tuple)     # nameservers of bridge jobs (port 53 only)

    def render(self) -> str:
        """The table as `nft -f` text. Loading it replaces any older copy of the table atomically."""
        br, net = _quote(self.bridge), str(ipaddress.ip_network(self.subnet))
        denied = _set([net, *ALWAYS_DENIED, *self.deny])
        allow = [f"\t\tiifname {br} ip daddr != {_set(self.allow)} drop"] if self.allow else []
        dns = [f"\t\tiifname {br} ip daddr {_set(self.dns)} meta l4proto {{ tcp, udp }} th dport 53 accept"
               ] if self.dns else []
        private = _minus(PRIVATE, self.allow)
        private_rule = [f"\t\tiifname {br} ip daddr {_set(private)} drop"] if private else []
        lines = [
            f"table inet {self.table} {{}}",
            f"delete table inet {self.table}",
            f"table inet {self.table} {{",
            "\tchain input {",
            f"\t\ttype filter hook input priority {PRIORITY}; policy accept;",
            f"\t\tiifname {br} drop",
            "\t}",
            "\tchain forward {",
            f"\t\ttype filter hook forward priority {PRIORITY}; policy accept;",
            f"\t\toifname {br} ct state established,related accept",
            f"\t\toifname {br} drop",
            f"\t\tiifname {br} meta nfproto ipv6 drop",
            f"\t\tiifname {br} ct status dnat drop",
            f"\t\tiifname {br} ip daddr {denied} drop",
            *allow,
            *dns,
            *private_rule,
            "\t}",
            "\tchain output {",
            f"\t\ttype filter hook output priority {PRIORITY}; policy accept;",
            f"\t\toifname {br} ct state established,related accept",
            f"\t\toifname {br} drop",
            "\t}",
            "\tchain postrouting {",
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
            f"\t\tip saddr {net} ip daddr != {net} oifname != {br} masquerade",
            "\t}",
            "}",
        ]
        return "\n".join(lines) + "\n"


def load(ruleset: Ruleset) -> None:
    """Create or replace the agent's table in one transaction."""
    _nft(ruleset.render())


def remove(table: str) -> bool:
    """Delete the agent's table if it exists; True if there was one."""
    present = exists(table)
    if present:
        _nft(f"table inet {table} {{}}\ndelete table inet {table}\n")
    return present


def exists(table: str) -> bool:
    try:
        nft = nft_path()
    except FirewallError:
        return False  # no nft, so no table either
    result = subprocess.run([nft, "list", "table", "inet", table], capture_output=True, text=True)
    return result.returncode == 0


def list_table(table: str) -> str:
    """The table as nft prints it ('' if absent): for tests and operators."""
    result = subprocess.run([nft_path(), "list", "table", "inet", table], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def nft_path() -> str:
    for path in NFT_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("nft")
    if found:
        return found
    raise FirewallError("nft not found (looked in /usr/sbin, /sbin, PATH): install the nftables package "
                        "to use network 'bridge'")


def _nft(text: str) -> None:
    result = subprocess.run([nft_path(), "-f", "-"], input=text, capture_output=True, text=True)
    if result.returncode != 0:
        raise FirewallError(f"nft refused the agent's ruleset: {result.stderr.strip() or result.returncode}")


def _quote(name: str) -> str:
    if not name or len(name) > 15 or not all(c.isalnum() or c in "-_." for c in name):
        raise FirewallError(f"bad interface name {name!r}")
    return f'"{name}"'


def _cidr(text: str) -> str:
    return str(ipaddress.IPv4Network(text, strict=False))


def _set(cidrs: Sequence[str]) -> str:
    """An nft set of networks, overlaps merged (nft refuses overlapping intervals in one set)."""
    nets = ipaddress.collapse_addresses(ipaddress.IPv4Network(c, strict=False) for c in cidrs)
    return "{ " + ", ".join(map(str, nets)) + " }"


def _minus(networks: Sequence[str], holes: Sequence[str]) -> list[str]:
    """`networks` without the parts `holes` cover."""
    parts = [ipaddress.IPv4Network(n) for n in networks]
    for hole in (ipaddress.IPv4Network(h, strict=False) for h in holes):
        kept: list[ipaddress.IPv4Network] = []
        for part in parts:
            if hole.supernet_of(part):
                continue
            kept += list(part.address_exclude(hole)) if part.supernet_of(hole) else [part]
        parts = kept
    return [str(p) for p in parts]
