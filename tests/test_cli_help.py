"""Every registered command resolves: its module imports, its function exists, and ``--help`` lists
a real summary for it (never the "unavailable" placeholder)."""

from __future__ import annotations

import pytest

from vavam import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_command_resolves_and_has_a_summary(name):
    target = cli.COMMANDS[name]
    assert callable(cli._resolve(target))
    summary = cli._summary(target)
    assert summary and not summary.startswith("(unavailable"), (name, summary)


def test_unreachable_server_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """A planner server that does not answer ends the command with its one-line message and status 2."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("VAVAM_TRACEBACK", raising=False)
    code = cli.main(["world", "scenarios", "--planner", "http", "--url", f"http://127.0.0.1:{port}",
                     "--out", str(tmp_path / "scores")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"vavam world scenarios: error: no NeuroNCAP-compatible model server answers at http://127.0.0.1:{port}" \
        in err
    assert "Traceback" not in err


def test_other_connection_errors_keep_their_traceback(monkeypatch):
    """Only an unreachable server is reported as bad input; a broken connection elsewhere is a bug to show."""

    def broken() -> None:
        raise ConnectionResetError("worker connection reset")

    monkeypatch.setitem(cli.COMMANDS, "broken", "x:y")
    monkeypatch.setattr(cli, "_resolve", lambda target: broken)
    with pytest.raises(ConnectionResetError, match="worker connection reset"):
        cli.main(["broken"])
