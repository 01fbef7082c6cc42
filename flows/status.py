"""The learn flow's status in Redis, written now and then without ever stopping the flow."""

from __future__ import annotations

import logging
import time

import redis

from models.learner import OnlineLearner
from models.status import write_status
from riverrun.settings import Settings

log = logging.getLogger(__name__)


class StatusReporter:
    """Writes the learner's status to Redis now and then; never stops the flow if Redis is down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=1, socket_connect_timeout=1
        )
        self.next_at = 0.0
        self.failures = 0

    def maybe_write(self, learner: OnlineLearner, *, force: bool = False) -> None:
        """Write if the status interval has passed (or ``force``)."""
        now = time.monotonic()
        if not force and now < self.next_at:
            return
        self.next_at = now + self.settings.status_interval
        try:
            write_status(self.client, self.settings.model_name, learner.report())
        except redis.RedisError as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("cannot write status to Redis (%d failures): %s", self.failures, exc)
