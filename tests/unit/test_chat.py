"""hydra.chat: commands are handled locally, never sent to the model."""

import io

from hydra.chat import HELP, Chat


def chat() -> tuple[Chat, io.StringIO]:
    out = io.StringIO()
    return Chat(client=None, api="http://x", model="m", system="be brief", params={}, out=out), out


def test_help_and_unknown_commands_stay_local():
    session, out = chat()
    assert session.command("/help") and HELP in out.getvalue()
    assert session.command("/frobnicate now")
    assert "unknown command /frobnicate" in out.getvalue()
    assert session.history == [{"role": "system", "content": "be brief"}]


def test_reset_keeps_the_system_prompt_and_exit_leaves():
    session, _ = chat()
    session.history.append({"role": "user", "content": "hi"})
    assert session.command("/reset") and session.history == [{"role": "system", "content": "be brief"}]
    assert not session.command("/exit") and not session.command("/bye")
