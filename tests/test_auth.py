"""Tokens, roles and the audit trail."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest
import requests

from agentproc import Api, create_token, running_agent

pytestmark = pytest.mark.root


def test_token_create_prints_one_line_and_stores_only_a_hash(agent):
    out = subprocess.run([sys.executable, "-m", "joblet_agent.cli", "token", "create", "--root", str(agent.root),
                          "--role", "user", "--name", "line-check"], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jnb_")
    stored = (agent.root / "state" / "tokens.json").read_text()
    assert lines[0] not in stored and "line-check" in stored
    assert oct((agent.root / "state" / "tokens.json").stat().st_mode & 0o777) == "0o600"


def test_a_new_token_works_at_once_in_a_running_agent(agent):
    token = subprocess.run([sys.executable, "-m", "joblet_agent.cli", "token", "create", "--root", str(agent.root),
                            "--role", "user"], capture_output=True, text=True, check=True).stdout.strip()
    r = Api(agent.url, token).call("GET", "/v1/whoami")
    assert r.status_code == 200 and r.json()["role"] == "user"


def test_roles_are_reported_and_enforced(agent, api, admin_api):
    assert api.call("GET", "/v1/whoami").json()["role"] == "user"
    assert admin_api.call("GET", "/v1/whoami").json()["role"] == "admin"
    assert api.call("POST", "/v1/runtimes/python-3.11/build", json={}).status_code == 403


def test_bad_role_is_refused_by_the_cli(agent):
    out = subprocess.run([sys.executable, "-m", "joblet_agent.cli", "token", "create", "--root", str(agent.root),
                          "--role", "root"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_audit_log_says_who_ran_what_and_how_it_ended(agent, api):
    result = api.run(command=["sh", "-c", "exit 4"], limits={"memory_mb": 64})
    lines = [json.loads(ln) for ln in (agent.root / "logs" / "audit.log").read_text().splitlines()]
    start = [ln for ln in lines if ln["action"] == "start" and ln["job"] == result.id]
    end = [ln for ln in lines if ln["action"] == "end" and ln["job"] == result.id]
    me = api.call("GET", "/v1/whoami").json()["id"]
    assert start and start[0]["owner"] == me and start[0]["limits"]["memory_mb"] == 64
    assert start[0]["command"] == ["sh", "-c", "exit 4"]
    assert end and (end[0]["status"], end[0]["exit_code"]) == ("FAILED", 4)


def test_tls_agent_serves_https_with_a_certificate_clients_pin():
    with running_agent(tls=True) as own:
        client = json.loads((own.root / "client-config" / "joblet" / "client.json").read_text())
        assert client["url"].startswith("https://") and client["cert"].endswith("agent-cert.pem")
        ok = requests.get(client["url"] + "/v1/whoami", verify=client["cert"],
                          headers={"Authorization": f"Bearer {client['token']}"}, timeout=10)
        assert ok.status_code == 200
        try:
            requests.get(client["url"] + "/v1/health", timeout=10)  # the system store does not know it
        except requests.exceptions.SSLError:
            pass
        else:
            raise AssertionError("an unpinned client accepted the agent's certificate")
        try:
            requests.get(client["url"].replace("https", "http") + "/v1/health", timeout=10)
        except requests.exceptions.ConnectionError:
            pass
        else:
            raise AssertionError("plain HTTP was served")


def test_unix_socket_agent_is_reachable_only_through_the_socket_file():
    with running_agent(unix=True) as own:
        sock = own.unix
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        token = create_token(own.root, "user")
        out = subprocess.run(["curl", "-sS", "--unix-socket", str(sock), "-H", f"Authorization: Bearer {token}",
                              "http://agent/v1/whoami"], capture_output=True, text=True, timeout=30)
        assert json.loads(out.stdout)["role"] == "user", out


def test_owner_ids_carry_128_bits_and_never_repeat(tmp_path, monkeypatch):
    """An owner id says whose jobs are whose: two tokens with one id would share their jobs. The
    random source is made to repeat itself, as a birthday collision of 32-bit ids would."""
    from joblet_agent import auth

    real = auth.secrets.token_hex
    repeats = iter([real(16)] * 3)
    monkeypatch.setattr(auth.secrets, "token_hex", lambda n=32: next(repeats, None) or real(n))
    store = auth.TokenStore(tmp_path / "tokens.json")
    tokens = [store.create("user", f"user-{i}") for i in range(3)]
    owners = [store.authenticate(f"Bearer {t}").id for t in tokens]
    assert len(set(owners)) == 3, f"two tokens share an owner id: {owners}"
    assert all(len(bytes.fromhex(o)) * 8 >= 128 for o in owners), owners
