"""Errors of talking to a model server, importable without the server's dependencies."""

from __future__ import annotations


class ServerUnreachable(ConnectionError):
    """No NeuroNCAP-compatible model server answers at the given address (the message names it).

    The command line reports it in one line like bad input; other ``ConnectionError`` s (a broken pipe,
    a worker's reset connection) keep their traceback.
    """


class NonFiniteTrajectory(RuntimeError):
    """The model answered with NaN or infinite waypoints (the server answers 500 with this message)."""
