"""Errors of the scoring service that the command line reports in one line."""

from __future__ import annotations


class ServeError(RuntimeError):
    """The server cannot start (a port taken, a TLS file missing); the message says why."""
