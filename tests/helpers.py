"""Helpers of the integration tests: read a topic whole, write raw messages, run a flow."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import TopicPartition

from flows.kafka_io import consumer, end_offsets, ensure_topics, producer
from flows.produce import ProduceRequest, produce
from riverrun.children import Child
from riverrun.local import free_port
from riverrun.runner import learn_topics, run_learn
from riverrun.settings import Settings


@dataclass
class Message:
    """A message read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def json(self) -> Any:
        """The value parsed as JSON."""
        return orjson.loads(self.value)


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every message of ``topic`` up to its current end, in partition then offset order."""
    ends = end_offsets(settings.bootstrap_servers, topic)
    c = consumer(settings.bootstrap_servers)
    out: list[Message] = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        remaining = {p: end for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end {ends}: left {remaining}")
            for m in c.consume(1000, 0.2):
                if m.error() is not None or m.partition() not in remaining:
                    continue
                out.append(
                    Message(
                        m.partition(),
                        m.offset(),
                        m.key(),
                        m.value() or b"",
                        dict(m.headers() or []),
                    )
                )
                if m.offset() + 1 >= remaining[m.partition()]:
                    del remaining[m.partition()]
    finally:
        c.close()
    out.sort(key=lambda m: (m.partition, m.offset))
    return out


def write_raw(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Write ``(key, value)`` messages to ``topic`` as they are."""
    ensure_topics(settings.bootstrap_servers, [topic], settings.partitions)
    p = producer(settings.bootstrap_servers)
    for key, value in messages:
        p.produce(topic, value, key)
    p.flush()


def event(
    i: int,
    features: dict[str, Any],
    label: Any = None,
    *,
    prefix: str = "e",
    entity: str = "a",
    t0: float = 1_000_000.0,
) -> bytes:
    """The JSON bytes of a well-formed event number ``i``."""
    body: dict[str, Any] = {
        "id": f"{prefix}{i}",
        "time": t0 + i,
        "entity": entity,
        "features": features,
    }
    if label is not None:
        body["label"] = label
    return orjson.dumps(body)


def run_flow_to_end(settings: Settings) -> None:
    """Run the learn flow in this process until the topics' current end."""
    ensure_topics(settings.bootstrap_servers, learn_topics(settings), settings.partitions)
    run_learn(settings.override({"follow": False}))


class LearnProcess(Child):
    """``riverrun learn`` following its topics in a child process."""

    def __init__(self, settings: Settings, *extra: str) -> None:
        super().__init__(settings.override({"follow": True}), "learn", *extra)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def count_messages(settings: Settings, topic: str) -> int:
    """How many messages ``topic`` holds."""
    return sum(end_offsets(settings.bootstrap_servers, topic).values())


def produce_stream(
    settings: Settings, events: int, prefix: str, dataset: str = "sea-drift", **request: Any
) -> None:
    """Write ``events`` events of a seeded stream (``sea-drift``; ids ``PREFIX-N``)."""
    req = ProduceRequest(dataset, events, seed=settings.seed, id_prefix=prefix, **request)
    produce(
        req,
        settings.bootstrap_servers,
        settings.topic_events,
        settings.topic_labels,
        partitions=settings.partitions,
        progress=False,
    )


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that nothing listens on right now."""
    while True:
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without its ``RIVERRUN_*`` variables (a developer's own
    settings must not reach a command under test), with ``extra`` added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERRUN_")}
    return {**env, **extra}


def run_cli(
    env: dict[str, str], *argv: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``riverrun ARGV...`` to its end with ``env`` added to this environment, less any
    ``RIVERRUN_*`` variable of this environment that ``env`` does not set."""
    return subprocess.run(
        [sys.executable, "-m", "riverrun.cli", *argv],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a command that refused its input said: exit 2, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of this user's processes, other than this one, started with ``name=value`` set."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:  # another user's process denies access; one that ended has no environ left
            environ = (entry / "environ").read_bytes()
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def processes_in_session(session: int) -> list[int]:
    """Pids of the processes of session ``session`` that run (zombies aside), whoever reaps them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:  # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(entry.name))
    return sorted(found)


def command_line(pid: int) -> str:
    """The command line of ``pid`` as a shell would show it ("?" once it has ended)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    return " ".join(arg.decode(errors="replace") for arg in argv)


class Lines:
    """A child's text output, read line by line on a thread, so that a test waits for the next
    line with a deadline instead of blocking on the pipe for as long as the child is silent."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")  # the end of the output, as readline() says it

    def next(self, timeout: float, what: str) -> str:
        """The next line ("" from the end of the output on); fail naming ``what`` at timeout."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from None
        if not line:
            self._lines.put(line)  # the end stays the end
        return line
