"""The first thing a user does: run a command and see its output come back from a sandbox."""

import pytest

pytestmark = pytest.mark.root


def test_echo_output_comes_back(api):
    result = api.run(command=["/bin/echo", "hello from a sandbox"])
    assert result.stdout == "hello from a sandbox\n", result.explain()
    assert result.record["status"] == "COMPLETED"
    assert [e["seq"] for e in result.events] == list(range(1, len(result.events) + 1))


def test_script_runs_with_base_python(api):
    result = api.run(script="import sys; print(sys.version_info[:2] >= (3, 7))")
    assert result.stdout == "True\n", result.explain()
