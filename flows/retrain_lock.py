"""One retrain at a time per model: a Redis lease that its holder renews while it works, so
a holder killed outright frees it within a lease, and that only its holder can free."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

log = logging.getLogger(__name__)

LEASE_SECONDS = 60
# Deletes the lock only if it still holds our token (compare-and-delete).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Extends the lock by ARGV[2] seconds only if it still holds our token.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class LockHeld(RuntimeError):
    """Another retrain of the model holds its lock."""


def retrain_lock(model: str) -> str:
    """The Redis key held while a retrain of ``model`` runs."""
    return f"riverrun:trigger:{model}:retrain"


class RetrainLock:
    """The retrain lock of one model, taken with a token of its own.

    ``take`` it, call ``keep`` now and then while the retrain runs (it renews the lease once
    a quarter of it has passed), and ``release`` it at the end.
    """

    def __init__(self, client: redis.Redis, model: str) -> None:
        self.client = client
        self.model = model
        self.key = retrain_lock(model)
        self.token = uuid.uuid4().hex
        self._renewed = 0.0  # monotonic time of the last renewal

    def take(self) -> bool:
        """Whether the lock was free and is now ours, for one lease."""
        self._renewed = time.monotonic()
        return bool(self.client.set(self.key, self.token, nx=True, ex=LEASE_SECONDS))

    def holds(self, token: str) -> bool:
        """Whether the lock is held with ``token`` (a caller's, who then renews it)."""
        return self.client.get(self.key) == token.encode()

    def keep(self) -> None:
        """Renew the lease if a quarter of it has passed; log, never raise, if it cannot."""
        if time.monotonic() - self._renewed < LEASE_SECONDS / 4:
            return
        self._renewed = time.monotonic()
        try:
            if not self.client.eval(_RENEW, 1, self.key, self.token, LEASE_SECONDS):
                log.warning("the retrain lock of %s expired while it ran", self.model)
        except redis.RedisError as exc:  # tried again at the next quarter
            log.warning("retrain lock of %s not renewed: %s", self.model, exc)

    def release(self) -> None:
        """Free the lock if it is still ours; log, never raise, if Redis will not."""
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:  # it expires by itself
            log.warning("retrain lock of %s not released: %s", self.model, exc)


@contextmanager
def retrain_held(client: redis.Redis, model: str, caller_token: str = "") -> Iterator[None]:
    """Run the block under the retrain lock of ``model``: under its caller's (who holds it
    with ``caller_token`` and renews it), else taken here and renewed by a thread until the
    block ends. Raises :class:`LockHeld` if another retrain holds it."""
    lock = RetrainLock(client, model)
    if caller_token:
        if not lock.holds(caller_token):
            raise LockHeld(f"the retrain lock of {model} is not held with the token given")
        yield
        return
    if not lock.take():
        raise LockHeld(
            f"a retrain of {model} already runs (lock {lock.key}); try again once it ends"
        )
    done = threading.Event()

    def renew() -> None:
        while not done.wait(LEASE_SECONDS / 4):
            lock.keep()

    renewer = threading.Thread(target=renew, name="retrain-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        lock.release()
