"""The server and its history on disk: a newcomer after a restart, or after
``kill -9``, is shown the history as if nothing happened; ``--store none``
keeps nothing; a store that cannot be used is one line at start. The store
alone: test_store.py."""

from __future__ import annotations

import re
import signal
import time

import pytest

from socket_chat.protocol import ActionLine, HistoryMessage, UserList, UserListRequest
from socket_chat.server import command_line, store
from socket_chat.server.command_line import main, open_store, parse_args
from tests import procs
from tests.conftest import start_server, stop_server
from tests.helpers import ChatTestClient
from tests.test_e2e import join, join_and_wait


def serve_on(identity_key, path, history: int = 5):
    opened = store.SqliteStore.open(path, history=history)
    return start_server(identity_key, history=history, store=opened)


def test_a_newcomer_after_a_restart_gets_the_history_as_before(identity_key, tmp_path):
    path = tmp_path / "history.sqlite3"
    chat, thread = serve_on(identity_key, path)
    try:
        ann = ChatTestClient(chat.server_address)
        ann.handshake()
        ann.join("Ann")
        for text in ("one", "two", "three"):
            ann.say(text)
        ann.send(ActionLine("waves"))
        ann.send(UserListRequest())
        ann.expect(UserList)  # the server has taken all four
        ann.close()
    finally:
        stop_server(chat, thread)

    chat, thread = serve_on(identity_key, path, history=3)
    try:
        bob = ChatTestClient(chat.server_address)
        bob.handshake()
        bob.join("Bob")
        history = [bob.expect(HistoryMessage) for _ in range(3)]
        bob.send(UserListRequest())
        bob.expect(UserList)  # and no more history before it
        assert [(e.sender, e.text, e.kind) for e in history] == [
            ("Ann", "two", "chat"),
            ("Ann", "three", "chat"),
            ("Ann", "waves", "action"),
        ]
        bob.close()
    finally:
        stop_server(chat, thread)


# --- the options -------------------------------------------------------------------


def test_store_none_and_history_zero_keep_nothing_on_disk(xdg_data_home):
    assert open_store(parse_args(["--store", "none"])) is None
    assert open_store(parse_args(["--history", "0"])) is None
    assert not xdg_data_home.exists()


def test_the_default_store_is_in_the_data_directory_with_the_retention_asked_for(xdg_data_home):
    opened = open_store(parse_args(["--keep-days", "7", "--keep-messages", "1000"]))
    try:
        assert opened.path == xdg_data_home / "socket-chat" / "history.sqlite3"
        assert opened.retention == store.Retention(days=7, messages=1000)
    finally:
        opened.close()
    kept = open_store(parse_args(["--keep-days", "0", "--store", str(xdg_data_home / "other.sqlite3")]))
    try:
        assert kept.retention == store.Retention(days=None, messages=None)  # for ever
    finally:
        kept.close()


def test_with_a_cluster_the_stream_is_the_history_not_a_file(xdg_data_home, capsys):
    pytest.importorskip("redis")
    assert open_store(parse_args(["--cluster", "redis://127.0.0.1:1/0"])) is None
    with pytest.raises(SystemExit):
        parse_args(["--cluster", "redis://127.0.0.1:1/0", "--store", "chat.sqlite3"])
    assert "with --cluster, the cluster's Redis stream keeps the history" in capsys.readouterr().err


def test_a_store_that_cannot_be_used_is_one_line_at_start_and_status_1(tmp_path, capsys, xdg_data_home):
    garbage = tmp_path / "history.sqlite3"
    garbage.write_bytes(b"\x00garbage" * 100)
    garbage.chmod(0o600)
    key = procs.private_key_copy(tmp_path / "key")
    status = main(["--key", str(key), "--host", "127.0.0.1", "--port", "0", "--store", str(garbage)])
    assert status == command_line.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == (
        f"The history store {garbage} is not an SQLite database (file is not a database). "
        "Move it away (a new one is then made) or choose another file with --store FILE.\n"
    )


# --- the real server, killed -------------------------------------------------------


@pytest.mark.slow
def test_lines_seen_before_a_kill_9_are_shown_after_the_restart_in_order_none_twice(tmp_path):
    started: list[procs.Proc] = []
    try:
        server = procs.start_server(tmp_path)
        started.append(server)
        ann, bob = (procs.start_client(tmp_path, server.port, label) for label in ("ann", "bob"))
        started += [ann, bob]
        join_and_wait(server, ann, "Ann")
        join_and_wait(server, bob, "Bob")
        for n in range(5):
            ann.send(f"line {n}")
            bob.stdout.expect(f"Ann: line {n}")  # delivered: the promise is that it is stored within a second
        time.sleep(1.0)  # that second: the bound under test, not a wait for an event
        server.popen.send_signal(signal.SIGKILL)
        assert server.wait() == -signal.SIGKILL

        again = procs.start_server(tmp_path)  # the same data directory, so the same store
        started.append(again)
        carol = procs.start_client(tmp_path, again.port, "carol")
        started.append(carol)
        join(carol, "Carol")
        carol.stdout.expect(re.compile(r"^\[history \d\d:\d\d\] Ann: line 4$"))
        carol.send("/quit")
        assert carol.wait() == 0
        history = [line for line in carol.stdout.lines if line.startswith("[history ")]
        assert [re.sub(r"^\[history \d\d:\d\d\] ", "", line) for line in history] == [
            f"Ann: line {n}" for n in range(5)
        ]
    finally:
        for proc in started:
            proc.kill()
