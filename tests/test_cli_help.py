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
