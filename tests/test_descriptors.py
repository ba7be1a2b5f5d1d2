"""server/descriptors.py: the server raises its open-file limit, or says it cannot."""

from __future__ import annotations

import re
import resource
from pathlib import Path

import pytest

from socket_chat.server import descriptors
from tests import procs

HARD = 20_000


class FakeLimits:
    """getrlimit/setrlimit over a pinned (soft, hard) pair."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.limits, self.refuse = (soft, hard), refuse
        self.set_to: list[tuple[int, int]] = []

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def set(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if self.refuse:
            raise ValueError("not allowed to raise maximum limit")
        self.set_to.append(limits)
        self.limits = limits


def raise_with(fake: FakeLimits, max_clients: int, clustered: bool = False) -> int | None:
    return descriptors.raise_limit(max_clients, clustered, getrlimit=fake.get, setrlimit=fake.set)


def test_a_low_soft_limit_is_raised_to_the_hard_one():
    fake = FakeLimits(1024, HARD)
    assert raise_with(fake, 5000) == HARD
    assert fake.set_to == [(HARD, HARD)]


def test_a_soft_limit_that_suffices_is_left_alone():
    fake = FakeLimits(8192, HARD)
    assert raise_with(fake, 5000) == 8192
    assert fake.set_to == []


def test_an_unlimited_hard_limit_gets_a_soft_limit_of_what_is_needed():
    fake = FakeLimits(256, resource.RLIM_INFINITY)
    assert raise_with(fake, 1000) == descriptors.needed(1000) == 1000 + descriptors.BASE
    assert fake.set_to == [(1064, resource.RLIM_INFINITY)]


def test_a_hard_limit_too_low_is_a_clear_error_that_says_what_fits():
    fake = FakeLimits(1024, 4096)
    with pytest.raises(descriptors.DescriptorLimitError) as caught:
        raise_with(fake, 5000)
    message = str(caught.value)
    assert "--max-clients 5000 needs 5064 open files" in message
    assert "at most 4096 (the hard limit, ulimit -Hn)" in message
    assert f"Use --max-clients {4096 - descriptors.BASE} or less" in message
    assert fake.set_to == []


def test_a_clustered_server_counts_a_redis_connection_per_client():
    assert descriptors.needed(5000, clustered=True) == 10_000 + descriptors.BASE
    with pytest.raises(descriptors.DescriptorLimitError, match=r"Use --max-clients 4968 or less"):
        raise_with(FakeLimits(1024, 10_000), 5000, clustered=True)
    assert raise_with(FakeLimits(1024, 10_000), 5000) == 10_000  # alone, it fits


def test_connections_in_their_handshake_count_too():
    assert descriptors.needed(1000, handshakes=100) == 1100 + descriptors.BASE
    with pytest.raises(descriptors.DescriptorLimitError, match=r"Use --max-clients 936 or less"):
        descriptors.raise_limit(
            1000, handshakes=100, getrlimit=FakeLimits(256, 1100).get, setrlimit=FakeLimits(0, 0).set
        )


def test_a_refused_raise_is_a_clear_error():
    with pytest.raises(descriptors.DescriptorLimitError, match=r"refused to raise this process's limit from 1024"):
        raise_with(FakeLimits(1024, HARD, refuse=True), 5000)


# --- the real server.py, started under a given limit --------------------------


def server_under_limit(tmp_path: Path, soft: int, hard: int, *options: str) -> procs.Proc:
    """server.py in a child whose open-file limit is set first (by the child
    itself, so no preexec_fn runs in this threaded process)."""
    key = procs.private_key_copy(tmp_path / "server-key")
    argv = ["server.py", "--key", str(key), "--host", "127.0.0.1", "--port", "0", *options]
    code = (
        "import resource, runpy, sys;"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}));"
        f"sys.argv = {argv!r};"
        "runpy.run_path('server.py', run_name='__main__')"
    )
    return procs.Proc(["-c", code], tmp_path / "server-data")


def open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads the limit from /proc (Linux)")
def test_the_server_raises_its_own_soft_limit_at_start(tmp_path):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = descriptors.needed(3000, handshakes=100)  # --max-startups 100
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the hard limit here ({hard}) is below what 3,000 clients need")
    server = server_under_limit(tmp_path, 256, hard, "--max-clients", "3000", "--max-startups", "100")
    try:
        server.stdout.expect(procs.LISTENING)
        assert open_file_limits(server.popen.pid)[0] >= want
    finally:
        server.kill()


def test_the_server_refuses_to_start_when_the_hard_limit_is_too_low(tmp_path):
    server = server_under_limit(tmp_path, 256, 512, "--max-clients", "5000", "--max-startups", "100")
    try:
        assert server.wait() == 1
        error = server.stderr.text()
        assert re.search(
            r"--max-clients 5000 needs 5164 open files .*100 for connections in their handshake.* at most 512", error
        )
        assert "Traceback" not in error
        assert "Listening" not in server.stdout.text()
    finally:
        server.kill()
