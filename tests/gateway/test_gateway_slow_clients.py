"""Slow clients are dropped by the running server (real `mtdesk serve`, raw sockets):
a connection that sends nothing, stalls in its headers or stalls in its body is closed
within the configured limit, and a prompt client is still served."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from served import Served, running_serve

IDLE_S = 1.0
BODY_S = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cwd: Path = tmp_path_factory.mktemp("slow")
    with running_serve(cwd, MTDESK_HTTP_IDLE_TIMEOUT_S=str(IDLE_S),
                       MTDESK_HTTP_BODY_TIMEOUT_S=str(BODY_S)) as s:
        yield s


def closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    """True when the server closes the connection within ``wait_s`` (we send nothing more)."""
    sock.settimeout(wait_s)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True  # orderly close (possibly after an error response)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()


# The limits are 1 s; waiting up to 20 s tells "closed by the limit" from "never closed"
# without depending on how busy the machine is.
WAIT_S = 20.0


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    assert closed_by_server(served.connect(), WAIT_S)


def test_a_connection_stalling_in_its_headers_is_closed(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Type: appli")
    assert closed_by_server(sock, WAIT_S)


def test_a_connection_trickling_its_headers_is_closed(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    try:
        # One header byte every 0.2 s: never idle, never finished.
        while time.monotonic() - started < WAIT_S:
            sock.sendall(b"X")
            time.sleep(0.2)
    except (ConnectionResetError, BrokenPipeError):
        return
    finally:
        sock.close()
    raise AssertionError("a connection trickling header bytes was never closed")


def test_a_connection_stalling_in_its_body_is_closed(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"object\":")
    assert closed_by_server(sock, WAIT_S)


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(WAIT_S)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert closed_by_server(sock, WAIT_S)


def test_a_prompt_client_is_still_served(served: Served) -> None:
    with urllib.request.urlopen(f"{served.base}/healthz", timeout=10) as r:
        assert r.status == 200
    assert served.proc.poll() is None
    assert not [line for line in served.lines if "Traceback" in line], served.lines
