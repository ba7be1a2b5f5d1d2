"""Several servers, one chat, as people run it: server.py processes with
--cluster sharing a real redis-server, and client.py processes on each."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from socket_chat.server import cluster
from tests import procs
from tests.helpers import wait_until
from tests.redis_proc import free_port, require_redis_server

CLUSTER_LINE = re.compile(r"^Cluster: redis://127\.0\.0\.1:\d+/0 \(this server is [0-9a-f]{12}\)$")


@pytest.fixture
def started(tmp_path):
    """``started(proc)`` keeps a process to be killed at the end of the test."""
    processes: list[procs.Proc] = []

    def keep(proc: procs.Proc) -> procs.Proc:
        processes.append(proc)
        return proc

    try:
        yield keep
    finally:
        for proc in processes:
            proc.kill()


def cluster_server(tmp_path, started, redis_server, label: str, *options: str) -> procs.Proc:
    server = started(procs.start_server(tmp_path / label, "--cluster", redis_server.url, *options))
    server.stdout.expect(CLUSTER_LINE)
    return server


def client(tmp_path, started, server: procs.Proc, name: str) -> procs.Proc:
    """client.py on ``server``, joined as ``name`` (the server has logged it)."""
    proc = started(procs.start_client(tmp_path, server.port, name))
    proc.stdout.expect("Please enter a username.")
    proc.send(name)
    server.stderr.expect(re.compile(rf" {re.escape(name)} joined from "))
    return proc


def test_people_on_two_server_processes_talk_as_one_chat(tmp_path, started, redis_server):
    a = cluster_server(tmp_path, started, redis_server, "a")
    b = cluster_server(tmp_path, started, redis_server, "b")
    randall = client(tmp_path, started, a, "Randall Flagg")
    jaime = client(tmp_path, started, b, "Jaime Lannister")
    randall.stdout.expect("* Jaime Lannister joined the chat.")

    jaime.send("Hi")
    randall.stdout.expect("Jaime Lannister: Hi")
    randall.send("Hi")
    jaime.stdout.expect("Randall Flagg: Hi")

    jaime.close_stdin()
    assert jaime.wait() == 0
    randall.stdout.expect("* Jaime Lannister left the chat.")


def test_a_server_killed_with_sigkill_frees_its_names_after_the_expiry(tmp_path, started, redis_server):
    import redis

    a = cluster_server(tmp_path, started, redis_server, "a", "--cluster-name-ttl", "1")
    b = cluster_server(tmp_path, started, redis_server, "b", "--cluster-name-ttl", "1")
    client(tmp_path, started, a, "Ghost")
    with redis.Redis.from_url(redis_server.url) as raw:
        assert raw.hget(cluster.NAME_PREFIX + "ghost", "server") is not None
        a.signal(signal.SIGKILL)
        assert a.wait() == -signal.SIGKILL
        # No one frees the name: it expires, a second after its last refresh.
        assert wait_until(lambda: not raw.exists(cluster.NAME_PREFIX + "ghost"), timeout=5)
    client(tmp_path, started, b, "Ghost")


def test_redis_stopped_and_started_again_during_a_conversation(tmp_path, started, redis_server):
    a = cluster_server(tmp_path, started, redis_server, "a")
    b = cluster_server(tmp_path, started, redis_server, "b")
    randall = client(tmp_path, started, a, "Randall Flagg")
    rhea = client(tmp_path, started, a, "Rhea")
    jaime = client(tmp_path, started, b, "Jaime Lannister")
    randall.stdout.expect("* Jaime Lannister joined the chat.")

    redis_server.stop()
    for person in (randall, rhea, jaime):
        person.stdout.expect(f"* {cluster.DEGRADED}")
    randall.send("Anyone there?")
    rhea.stdout.expect("Randall Flagg: Anyone there?")  # the people on server A still talk

    redis_server.start()
    for person in (randall, rhea, jaime):
        person.stdout.expect(f"* {cluster.RESTORED}", timeout=15)
    jaime.send("Back again")
    randall.stdout.expect("Jaime Lannister: Back again")
    rhea.stdout.expect("Jaime Lannister: Back again")
    assert "Randall Flagg: Anyone there?" not in jaime.stdout.lines  # said while apart: not sent on
    assert a.popen.poll() is None and b.popen.poll() is None


def test_redis_that_does_not_answer_at_start_is_a_clear_error_and_exit_status_3(tmp_path, monkeypatch):
    require_redis_server()  # not used, but its absence must not hide this test's meaning
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    monkeypatch.setenv("CHAT_CLUSTER", url)  # the environment's address, as --cluster's
    key = procs.private_key_copy(tmp_path / "key")
    server = procs.Proc(["server.py", "--key", str(key), "--host", "127.0.0.1", "--port", "0"], tmp_path)
    try:
        assert server.wait() == 3
        assert re.search(rf"^Cannot reach the cluster at {re.escape(url)}: .*refused", server.stderr.text(), re.M)
    finally:
        server.kill()


def test_cluster_needs_the_redis_package_and_says_how_to_install_it(tmp_path):
    key = procs.private_key_copy(tmp_path / "key")
    without_redis = (
        "import sys; sys.modules['redis'] = None; from socket_chat.server import command_line; "
        f"sys.exit(command_line.main(['--key', {str(key)!r}, '--cluster', 'redis://127.0.0.1:1/0']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_redis], cwd=procs.ROOT, capture_output=True, text=True, timeout=procs.TIMEOUT
    )
    assert result.returncode == 3
    assert "pip install -r requirements-cluster.txt" in result.stderr


def test_without_cluster_the_server_never_imports_redis():
    check = (
        "import sys; from socket_chat.server import command_line; command_line.parse_args([]); "
        "assert 'redis' not in sys.modules, 'redis imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=procs.ROOT, capture_output=True, text=True, timeout=procs.TIMEOUT
    )
    assert result.returncode == 0, result.stderr
