"""The IRC server as a peer in the benchmark (bench/irc.py, bench/peer.py).

By default, without ngircd: its configuration turns the limits off and binds
loopback only, the IRC client turns the server's lines into the load
generator's events, and the report says when the peer was skipped. The
slow test runs Debian's ngircd over TLS on a tiny load and checks that every
line reached every other member exactly once (skipped without ngircd,
except in CI, whose .ci/run installs it)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from bench import irc, peer, scenarios
from bench import lockstep as lockstep_run
from bench.report import SECTIONS
from socket_chat import protocol
from socket_chat.protocol import ChatLine, ChatMessage, ErrorNotice, Username, UsernameRequest, Welcome
from tests.redis_proc import skip_or_fail

TIMEOUT = 20.0  # seconds for any one step against ngircd
MEMBERS = 5


def test_the_irc_servers_configuration_listens_on_loopback_over_tls_with_its_limits_off():
    text = irc.config_text(6697, Path("/tmp/c.pem"), Path("/tmp/k.pem"))
    lines = {line.strip() for line in text.splitlines()}
    assert {"Listen = 127.0.0.1", "Ports =", "Ports = 6697"} <= lines  # TLS only, and only on loopback
    assert {"MaxConnectionsIP = 0", "MaxConnections = 0", "MaxPenaltyTime = 0", "MaxJoins = 0"} <= lines
    assert {"DNS = no", "Ident = no", "PAM = no"} <= lines  # no lookups that would wait on the network
    assert {"CertFile = /tmp/c.pem", "KeyFile = /tmp/k.pem"} <= lines


def test_ci_installs_every_command_the_irc_peer_needs():
    """irc.missing() wants ngircd and openssl: without one, the slow test
    fails in CI (CI=true) instead of running."""
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    for command in ("ngircd", "openssl"):
        assert re.search(rf"command -v {command} .*packages\+=\({command}\)", ci), command


def events_of(conn: irc.IrcConnection, lines: bytes) -> list:
    """What ``conn`` makes of ``lines`` from the server (as if TLS had them decrypted)."""
    conn._lines += lines  # the TLS layer is the standard library's; the lines are ours to read
    conn._parse()
    events = []
    while (event := conn.next_event()) is not protocol.NEED_DATA:
        events.append(event)
    return events


def test_the_irc_client_gives_the_load_generator_its_events():
    conn = irc.IrcConnection(ssl.create_default_context())
    assert conn.data_to_send()  # the ClientHello, before anything else
    conn.send(Username("m1-0"))
    conn.send(ChatLine("hello"))
    text = (
        b":bench.invalid 001 m1-0 :Welcome\r\n"
        b":bench.invalid 366 m1-0 #bench :End of NAMES list\r\n"
        b":m1-1!~m1-1@127.0.0.1 PRIVMSG #bench :r3 0 12345\r\n"
        b":m1-1!~m1-1@127.0.0.1 PRIVMSG m1-0 :not to the channel\r\n"
        b":bench.invalid 433 * m1-0 :Nickname already in use\r\n"
        b":bench.invalid 404 m1-0 #bench :Cannot send to channel\r\n"
    )
    assert events_of(conn, text[:20]) == []  # half a line: nothing yet
    assert events_of(conn, text[20:]) == [
        Welcome("m1-0"),
        ChatMessage("m1-1", "r3 0 12345"),
        UsernameRequest("* m1-0 :Nickname already in use"),
        ErrorNotice("404 m1-0 #bench :Cannot send to channel"),
    ]
    assert events_of(conn, b"ERROR :Closing connection\r\n") == [
        ErrorNotice(":Closing connection"),
        protocol.ConnectionClosed(clean=False),
    ]
    with pytest.raises(TypeError):
        conn.send(protocol.Goodbye("bye"))


def test_the_report_says_the_peer_was_skipped_and_why(monkeypatch):
    monkeypatch.setattr(irc, "missing", lambda: irc.NOT_INSTALLED)
    results, progress = peer.PeerResults(), []
    peer.measure(peer.QUICK_PEER, results, lambda: pytest.fail("no server should start"), progress.append, [])
    assert results.skipped == irc.NOT_INSTALLED and not results.runs
    section = "\n".join(peer.section(results))
    assert section.startswith(SECTIONS[SECTIONS.index("## The IRC server as a peer")])
    assert f"skipped: {irc.NOT_INSTALLED}" in section and f"  skipped: {irc.NOT_INSTALLED}" in progress
    assert peer.targets(results, {}) == [
        ("the IRC server side by side (issue 22, part 4)", f"skipped: {irc.NOT_INSTALLED}", "**no**")
    ]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_ngircd_over_tls_gets_every_line_to_every_other_member_exactly_once(tmp_path):
    """About 3 s: ngircd starts (with its DH parameters), 4 handshakes, a
    room of 5, 10 lines flat out and 5 in lockstep."""
    why = irc.missing()
    if why:
        skip_or_fail(why)
    with irc.IrcServer(tmp_path) as server:
        assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
        handshakes = scenarios.measure_handshakes(server.address, False, 4, 2, TIMEOUT, server.connection)
        assert (handshakes.count, handshakes.concurrency) == (4, 2) and handshakes.per_second > 0
        gen = scenarios.fill_room(server.address, False, MEMBERS, TIMEOUT, server.connection)
        try:
            flat = scenarios.run_flat_out(gen, senders=2, messages_each=5, window=3, timeout=TIMEOUT)
            assert flat.messages == 10 and flat.expected == 10 * (MEMBERS - 1)
            assert flat.deliveries == flat.expected and flat.lost == flat.duplicated == flat.reordered == 0, flat
            steps = lockstep_run.run(gen, peer.IRC, server.pid, 5, TIMEOUT)
            assert steps.deliveries == steps.expected == 5 * (MEMBERS - 1) and steps.duplicated == 0, steps
            assert gen.errors == []
        finally:
            gen.close_all()
        assert scenarios.rss_kib(server.pid) > 0 and scenarios.cpu_seconds(server.pid) >= 0


def test_python_m_bench_peer_runs_the_peer_part_alone_and_prints_it(monkeypatch, capsys):
    planned = []

    def measure(plan, results, server_process, progress, errors):
        planned.append(plan)
        results.skipped = "ngircd is not installed"

    monkeypatch.setattr(peer, "measure", measure)
    assert peer.main(["--quick"]) == 0
    assert planned == [peer.QUICK_PEER]
    assert "skipped: ngircd is not installed" in capsys.readouterr().out
