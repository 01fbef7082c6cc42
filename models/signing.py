"""Signed pickles: HMAC-SHA256 over the bytes, checked before anything is unpickled.

Unpickling runs code, so a snapshot is only loaded if it carries a valid signature made
with the registry key. A missing or wrong signature raises :class:`SignatureError` and
the bytes are never handed to :mod:`pickle`.

A signature vouches for the bytes, not for which model and version they are: the registry
binds each snapshot to its model, version and metadata with :func:`mac` under the same key
(see :mod:`models.registry`).
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

MAGIC = b"RRS1"  # riverrun signed snapshot, format 1
_DIGEST = hashlib.sha256().digest_size
MIN_KEY_BYTES = 16


class SignatureError(ValueError):
    """Bytes that are unsigned, or whose signature does not match the key."""


class MissingKeyError(ValueError):
    """A registry key that is missing or too short to sign with."""


def check_key(key: str | bytes) -> bytes:
    """The key as bytes, or :class:`MissingKeyError` if it is unset or shorter than 16 bytes."""
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < MIN_KEY_BYTES:
        raise MissingKeyError(
            "RIVERRUN_REGISTRY_KEY is not set or shorter than 16 bytes: model snapshots are "
            "signed with it (riverrun local up prints one; e.g. openssl rand -hex 32)"
        )
    return raw


def mac(message: bytes, key: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key``: what signatures and registry bindings are."""
    return hmac.new(key, message, hashlib.sha256).digest()


def sign(payload: bytes, key: bytes) -> bytes:
    """``payload`` with its signature in front.

    >>> signed = sign(b"data", b"k" * 16)
    >>> verify(signed, b"k" * 16)
    b'data'
    """
    return MAGIC + mac(payload, key) + payload


def verify(signed: bytes, key: bytes) -> bytes:
    """The payload of ``signed`` if its signature is valid under ``key``.

    >>> verify(b"plain pickle", b"k" * 16)
    Traceback (most recent call last):
    ...
    models.signing.SignatureError: unsigned snapshot: refused
    """
    if not signed.startswith(MAGIC) or len(signed) < len(MAGIC) + _DIGEST:
        raise SignatureError("unsigned snapshot: refused")
    signature = signed[len(MAGIC) : len(MAGIC) + _DIGEST]
    payload = signed[len(MAGIC) + _DIGEST :]
    if not hmac.compare_digest(signature, mac(payload, key)):
        raise SignatureError(
            "snapshot signature does not match: refused (tampered, or signed with another key)"
        )
    return payload


def dumps_signed(obj: Any, key: bytes) -> bytes:
    """Pickle ``obj`` and sign the pickle."""
    return sign(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), key)


def loads_signed(signed: bytes, key: bytes) -> Any:
    """Unpickle ``signed`` only after its signature checks."""
    return pickle.loads(verify(signed, key))
