"""Errors of the scoring service that the command line reports in one line."""

from __future__ import annotations

import ssl
from pathlib import Path


class ServeError(RuntimeError):
    """The server cannot start, or a client cannot set up its channel (a port taken, a TLS
    file missing); the message says why."""


def read_tls_file(path: str, what: str) -> bytes:
    """The PEM file at ``path``: the server's key or certificate, a client's root certificate
    (``what`` says which), or :class:`ServeError` naming it.

    >>> read_tls_file("/nope", "key")
    Traceback (most recent call last):
    ...
    grpc_api.errors.ServeError: cannot read the TLS key '/nope': No such file or directory
    """
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ServeError(f"cannot read the TLS {what} {path!r}: {exc.strerror}") from None


def check_tls_pair(cert: str, key: str) -> None:
    """Refuse a server certificate and key that are not a PEM certificate and its key,
    naming both: gRPC would only fail to bind, and the error would blame the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")  # never a prompt
    except ssl.SSLError as exc:
        raise ServeError(
            f"the TLS certificate {cert!r} and key {key!r} are not a PEM certificate and its "
            f"unencrypted key: {exc.reason or exc}"
        ) from None
