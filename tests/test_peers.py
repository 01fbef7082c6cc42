"""A learn-cluster process dials its peers only once they listen: the wait sees a port
listen without connecting to it, and gives up after its timeout."""

from __future__ import annotations

import socket
import threading

from riverrun.local import free_port
from riverrun.peers import await_listeners, listening_ports


def test_the_wait_ends_when_the_peer_listens_and_not_before() -> None:
    port = free_port()
    assert port not in (listening_ports() or set())
    listen_now, done = threading.Event(), threading.Event()

    def peer() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
            listen_now.wait(10)  # bound but not listening yet: not enough
            sock.listen()
            done.wait(10)

    thread = threading.Thread(target=peer)
    thread.start()
    try:
        assert not await_listeners([f"127.0.0.1:{port}"], timeout=0.3)
        listen_now.set()
        assert await_listeners([f"127.0.0.1:{port}"], timeout=10)
    finally:
        listen_now.set()
        done.set()
        thread.join()
