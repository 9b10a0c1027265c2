"""The bridge network's pure parts, without a kernel: the address pool, the subnet choice, the ruleset."""

from __future__ import annotations

import pytest

from joblet_agent.config import NetworkConfig
from joblet_agent.network import firewall
from joblet_agent.network.bridge import AddressPool, NetworkError, choose_subnet


def test_address_pool_hands_out_round_robin_and_reuses() -> None:
    import ipaddress

    pool = AddressPool(ipaddress.IPv4Network("10.0.0.0/29"))
    first = [str(pool.take()) for _ in range(5)]
    assert first == [f"10.0.0.{n}" for n in range(2, 7)]  # .1 is the gateway, .7 the broadcast
    with pytest.raises(NetworkError, match="held by running bridge jobs"):
        pool.take()
    pool.give(ipaddress.IPv4Address("10.0.0.4"))
    pool.give(ipaddress.IPv4Address("10.0.0.2"))
    assert [str(pool.take()), str(pool.take())] == ["10.0.0.2", "10.0.0.4"]


def test_default_subnet_skips_routes_of_the_host() -> None:
    import ipaddress

    routes = [ipaddress.IPv4Network("10.89.7.0/24"), ipaddress.IPv4Network("10.89.8.0/23")]
    assert str(choose_subnet(NetworkConfig(), "07abcdef", routes)) == "10.89.10.0/24"
    with pytest.raises(NetworkError, match="overlaps"):
        choose_subnet(NetworkConfig(subnet="10.89.9.0/24"), "07abcdef", routes)


def test_ruleset_drops_host_jobs_metadata_and_ipv6() -> None:
    text = firewall.Ruleset(table="jnb_t", bridge="jnb-br-t", subnet="10.1.2.0/24", deny=["192.168.0.0/16"]).render()
    for rule in ('iifname "jnb-br-t" drop', 'oifname "jnb-br-t" drop', "meta nfproto ipv6 drop",
                 "ct status dnat drop", "169.254.0.0/16", "192.168.0.0/16", "masquerade"):
        assert rule in text
