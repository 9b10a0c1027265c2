"""The notebook side of sessions in a real IPython shell against a real agent: `%joblet session`,
`%%joblet run --session`, `%joblet auto`, results as a local cell's, errors with the session's
traceback, Ctrl-C, --in/--out, completion, and ended sessions said at once."""

from __future__ import annotations

import signal
import threading

import pytest
from IPython.core.completer import provisionalcompleter

from agentproc import running_agent
from joblet_nb.core.session import SessionEnded
from joblet_nb.ipython.session_magics import RemoteResult, keeper_of
from nbshell import NbShell
from waiting import wait_until

pytestmark = pytest.mark.root


@pytest.fixture
def sess(nb):
    """A shell with a fresh session; auto off and the session ended afterwards."""
    cell = nb.run("%joblet session start")
    assert cell.error is None, (cell.error, cell.stderr)
    yield nb
    keeper = keeper_of(nb.magics)
    keeper.set_auto(False)
    keeper.end()


def run(nb, source):
    """A cell and the value IPython's displayhook got (the execute_result)."""
    outcome = nb.shell.run_cell(source)
    return outcome


def test_a_session_cell_keeps_variables_and_returns_its_result_as_a_local_cell_does(sess):
    assert sess.run("%%joblet run --session\nimport os\nin_session = 20\nprint('in', os.getcwd())").stdout == "in /work\n"
    outcome = run(sess, "%%joblet run --session\nin_session + 22")
    assert isinstance(outcome.result, RemoteResult)
    assert outcome.result._repr_mimebundle_() == {"text/plain": "42"}
    assert "in_session" not in sess.shell.user_ns   # it lives in the session


def test_an_error_fails_the_cell_with_the_sessions_traceback(sess):
    cell = sess.run("%%joblet run --session\ndef f():\n    return 1 / 0\nf()")
    assert type(cell.error).__name__ == "ZeroDivisionError"
    rendered = "\n".join(cell.error._render_traceback_())
    assert "<cell" in rendered and "return 1 / 0" in rendered and "ZeroDivisionError: division by zero" in rendered


def test_display_data_is_filtered_again_before_it_is_published(sess):
    cell = sess.run("%%joblet run --session\nclass H:\n    def _repr_html_(self):\n"
                    "        return '<table><tr><td>1</td></tr></table><script>window.jnbPwned=1</script>'\n"
                    "display(H())")
    html = cell.htmls()
    assert "<td>1</td>" in html and "script" not in html


def test_in_and_out_move_json_values(sess):
    sess.shell.user_ns["sent"] = [1, 2, 3]
    cell = sess.run("%%joblet run --session --in sent --out back\nback = {'n': len(sent)}")
    assert cell.error is None, cell.error
    assert sess.shell.user_ns["back"] == {"n": 3}


def test_auto_sends_every_cell_to_the_session_and_marks_it(sess):
    assert sess.run("%joblet auto").error is None
    sess.run("remote_only = 7")
    assert "remote_only" not in sess.shell.user_ns
    cell = sess.run("remote_only * 6")
    assert "sandbox · session" in cell.texts()
    status = sess.run("%joblet session status")     # %joblet magics still run here
    assert status.error is None and "READY" in status.texts() + status.htmls()
    with provisionalcompleter():
        matches = [c.text for c in sess.shell.Completer.completions("remote_o", 8)]
    assert "remote_only" in matches
    sess.run("%joblet auto off")
    local = sess.run("print('here')")
    assert local.stdout == "here\n" and "sandbox" not in local.texts()


def test_ctrl_c_interrupts_the_session_cell_and_keeps_its_variables(sess, nb):
    sess.run("%%joblet run --session\nkept = 'yes'")
    main = threading.main_thread().ident
    keeper = keeper_of(sess.magics)

    def interrupter():
        wait_until(lambda: keeper.current().record().get("status") == "BUSY")
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=interrupter, daemon=True)
    thread.start()
    cell = sess.run("%%joblet run --session\nimport time\ntime.sleep(600)")
    thread.join(timeout=60)
    assert isinstance(cell.error, KeyboardInterrupt), cell.error
    assert run(sess, "%%joblet run --session\nkept").result._repr_mimebundle_()["text/plain"] == "'yes'"


def test_an_ended_session_says_so_at_the_next_cell(sess):
    keeper = keeper_of(sess.magics)
    sid = keeper.current().id
    sess.client()._request("DELETE", f"/v1/sessions/{sid}")
    cell = sess.run("%%joblet run --session\n1")
    assert isinstance(cell.error, SessionEnded), cell.error
    assert "deleted" in cell.error.message and "%joblet session start" in cell.error.message


def test_an_idle_end_is_said_at_the_next_cell(nb):
    assert nb.run("%joblet session start --idle-timeout 1").error is None
    keeper = keeper_of(nb.magics)
    try:
        nb.run("%%joblet run --session\nx = 1")
        session = keeper.current()
        wait_until(lambda: session.record()["status"] == "ENDED")
        cell = nb.run("%%joblet run --session\nx")
        assert isinstance(cell.error, SessionEnded), cell.error
        assert "reason idle" in cell.error.message and "%joblet session start" in cell.error.message
    finally:
        keeper.end()


def test_an_oom_fails_the_running_cell_and_is_said_at_the_next(nb):
    assert nb.run("%joblet session start --max-memory 64M").error is None
    keeper = keeper_of(nb.magics)
    try:
        running = nb.run("%%joblet run --session\nblocks = []\nwhile True:\n    blocks.append(bytearray(8 << 20))")
        assert type(running.error).__name__ == "SessionEnded" and "reason oom" in str(running.error), running.error
        cell = nb.run("%%joblet run --session\n1")
        assert isinstance(cell.error, SessionEnded) and "reason oom" in cell.error.message, cell.error
    finally:
        keeper.end()


def test_a_session_lost_with_its_agent_is_said_at_the_next_cell(nb, tmp_path):
    with running_agent() as agent:
        own = NbShell(nb.shell, agent, tmp_path)
        for path, token in ((own.user_token_file, agent.user_token), (own.admin_token_file, agent.admin_token)):
            path.write_text(token + "\n")
            path.chmod(0o600)
        own.configure()
        keeper = keeper_of(nb.magics)
        try:
            assert own.run("%joblet session start").error is None
            assert own.run("%%joblet run --session\nx = 1").error is None
            agent.stop(signal.SIGTERM)
            agent.start()
            cell = own.run("%%joblet run --session\nx")
            assert isinstance(cell.error, SessionEnded) and "reason lost" in cell.error.message, cell.error
        finally:
            keeper.end()
            nb.configure()


def test_no_session_is_a_clear_usage_error(nb):
    keeper_of(nb.magics).end()
    cell = nb.run("%%joblet run --session\n1")
    assert "no joblet session" in str(cell.error)


def test_restart_gives_a_new_session_without_the_old_variables(sess):
    sess.run("%%joblet run --session\nold = 1")
    first = keeper_of(sess.magics).current().id
    assert sess.run("%joblet session restart").error is None
    assert keeper_of(sess.magics).current().id != first
    cell = sess.run("%%joblet run --session\nold")
    assert type(cell.error).__name__ == "NameError"


def test_attach_replays_the_last_cells_output_from_the_agents_log(sess):
    sess.run("%%joblet run --session\nprint('first')")
    sess.run("%%joblet run --session\nprint('second')\ndisplay(7)")
    replay = sess.run("%joblet session attach")
    assert replay.error is None, replay.error
    assert replay.stdout == "second\n" and "7" in replay.texts()
