"""Fixtures shared by the tests: fixed keys and a live server on loopback."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat.server import app as chat_server
from tests.helpers import ChatTestClient, OwnServer, open_door_limits
from tests.redis_proc import RedisServer

KEYS = Path(__file__).parent / "keys"


@pytest.fixture(scope="session")
def identity_key():
    """The server's RSA key, made once and committed: a test-only key."""
    return crypto_utils.import_private_key((KEYS / "test-only-server-key.pem").read_bytes())


@pytest.fixture(scope="session")
def impostor_key():
    """A second key, for a server that pretends to be the first."""
    return crypto_utils.import_private_key((KEYS / "test-only-impostor-key.pem").read_bytes())


@pytest.fixture(autouse=True)
def no_personal_client_settings(tmp_path, monkeypatch):
    """The client's settings file (client.conf) of whoever runs the tests
    must not change what the client does in them."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))


@pytest.fixture
def xdg_data_home(tmp_path, monkeypatch):
    """Keep known hosts and key files of every test in its own directory."""
    home = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def start_server(key, **options) -> tuple[chat_server.ChatServer, threading.Thread]:
    """A ChatServer on 127.0.0.1 and a free port (``options`` for ChatServer;
    ``limits`` by default ``open_door_limits()``), serving."""
    options.setdefault("limits", open_door_limits())
    server = chat_server.ChatServer(key, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, name="serve_forever", daemon=True)
    thread.start()
    return server, thread


def stop_server(server: chat_server.ChatServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def running_server(identity_key):
    """A real ChatServer on 127.0.0.1 and a free port, stopped afterwards."""
    server, thread = start_server(identity_key)
    try:
        yield server
    finally:
        stop_server(server, thread)


@pytest.fixture
def connect(running_server):
    """Open protocol-level test clients to ``running_server``; all are closed at the end."""
    clients: list[ChatTestClient] = []

    def open_client(name: str | None = None) -> ChatTestClient:
        client = ChatTestClient(running_server.server_address)
        clients.append(client)
        client.handshake()
        if name is not None:
            client.join(name)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def own_server(identity_key):
    """A server this test starts (with limits of its choice) and controls."""
    own = OwnServer(identity_key)
    try:
        yield own
    finally:
        own.cleanup()


@pytest.fixture
def thread_errors():
    """Every exception that escapes a thread while the test runs (the
    default hook would only print it)."""
    errors: list[str] = []
    previous = threading.excepthook

    def capture(args):
        errors.append(
            f"{args.thread.name if args.thread else '?'}: "
            + "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        )

    threading.excepthook = capture
    try:
        yield errors
    finally:
        threading.excepthook = previous


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on loopback, for the cluster tests (skipped
    without one, except in CI)."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()
