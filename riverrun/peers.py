"""A process of a learn cluster joins once the processes it dials are listening.

Timely (under Bytewax) has each process dial every lower-numbered one as it starts, and
prints ``worker 1: error connecting to worker 0 ... retrying`` for each refusal, a line
that reads like a failure on an ordinary start whenever process 0 is a moment slower.
Waiting for their ports to listen first (as Linux's ``/proc/net/tcp`` shows, without
connecting, which the listener would take for a peer) leaves the start quiet.
"""

from __future__ import annotations

import time
from pathlib import Path

LISTEN = "0A"  # the TCP state of a listening socket in /proc/net/tcp
TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def listening_ports() -> set[int] | None:
    """The local TCP ports something listens on, or ``None`` where the kernel does not say
    (not Linux)."""
    ports: set[int] = set()
    found = False
    for table in TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == LISTEN:
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports if found else None


def await_listeners(addresses: list[str], timeout: float = 30.0) -> bool:
    """Wait until every ``host:port`` of ``addresses`` listens on this machine; ``False``
    after ``timeout`` seconds, or at once where listeners cannot be seen (the caller then
    joins anyway, and timely retries on its own)."""
    ports = {int(address.rpartition(":")[2]) for address in addresses}
    deadline = time.monotonic() + timeout
    while True:
        listening = listening_ports()
        if listening is None:
            return False
        if ports <= listening:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
