"""The limits, without sockets: the token bucket, the send queue, the
client's pacer, and the server's limit options."""

from __future__ import annotations

import pytest

from socket_chat.chat import limits
from socket_chat.chat.limits import Limits, Startups
from socket_chat.protocol import ChatMessage, Encoded, Goodbye, RateLimit, encode
from socket_chat.server.command_line import MAX_MESSAGE_BYTES_CEILING, limits_from, parse_args


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the token bucket --------------------------------------------------------


def test_a_burst_goes_through_then_the_next_is_told_how_long_to_wait():
    clock = FakeClock()
    bucket = limits.TokenBucket(rate=5, burst=20, clock=clock)

    assert [bucket.take() for _ in range(20)] == [0.0] * 20
    assert bucket.take() == pytest.approx(0.2)


def test_refused_messages_cost_nothing_and_the_rate_holds_after_a_burst():
    clock = FakeClock()
    bucket = limits.TokenBucket(rate=5, burst=20, clock=clock)
    for _ in range(20):
        bucket.take()

    assert bucket.take() == pytest.approx(0.2)
    clock.advance(0.1)
    assert bucket.take() == pytest.approx(0.1)  # the refusal above spent nothing
    clock.advance(0.1)
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.2)


def test_a_sustained_rate_at_the_limit_is_never_refused():
    clock = FakeClock()
    bucket = limits.TokenBucket(rate=5, burst=20, clock=clock)
    for _ in range(500):
        assert bucket.take() == 0.0
        clock.advance(0.2)


def test_an_idle_bucket_refills_to_the_burst_and_no_further():
    clock = FakeClock()
    bucket = limits.TokenBucket(rate=5, burst=3, clock=clock)
    for _ in range(3):
        bucket.take()
    clock.advance(3600)

    assert [bucket.take() for _ in range(3)] == [0.0] * 3
    assert bucket.take() > 0


def test_rate_zero_means_no_flood_control():
    bucket = limits.TokenBucket(rate=0, burst=1, clock=FakeClock())
    assert all(bucket.take() == 0.0 for _ in range(1000))


# --- the send queue ----------------------------------------------------------


def message(text: str = "x" * 100) -> ChatMessage:
    return ChatMessage("Alice", text)


def item(text: str = "x" * 100) -> Encoded:
    return encode(message(text))


def queued_size(text: str = "x" * 100) -> int:
    return len(item(text).payload) + limits.QUEUED_OVERHEAD


def messages_of(items: list[Encoded]) -> list:
    return [each.message for each in items]


def test_the_send_queue_refuses_what_would_pass_its_limit_and_keeps_the_rest():
    outbox = limits.Outbox(limit_bytes=3 * queued_size())

    assert [outbox.put(item(str(n) * 100)) for n in range(3)] == [True] * 3
    assert outbox.queued_bytes == 3 * queued_size()
    assert outbox.put(item()) is False
    assert outbox.queued_bytes == 3 * queued_size()
    assert messages_of(outbox.take()) == [message(str(n) * 100) for n in range(3)]


def test_a_send_queue_that_overflowed_takes_nothing_more_and_lets_its_sender_stop():
    outbox = limits.Outbox(limit_bytes=queued_size())
    assert outbox.put(item("first"))
    assert outbox.put(item("y" * 1000)) is False  # over: the client is to be cut off

    assert outbox.put(item("later")) is True  # dropped: the client is on its way out
    assert messages_of(outbox.take()) == [message("first")]
    assert outbox.take() is None  # closed and empty: the sender's signal to stop


def test_a_message_counts_by_its_text_so_long_lines_fill_the_queue_sooner():
    assert queued_size("y" * 4000) - queued_size("y" * 1000) == 3000


def test_close_lets_the_goodbye_past_the_limit_and_the_sender_drains_then_stops():
    outbox = limits.Outbox(limit_bytes=queued_size())
    outbox.put(item())

    outbox.close(last=encode(Goodbye("bye")))
    outbox.put(item("after the close"))  # dropped: the client is leaving

    assert messages_of(outbox.take()) == [message(), Goodbye("bye")]
    assert outbox.take() is None  # closed and empty: stop


def test_the_sender_is_called_once_per_take_not_once_per_message():
    calls = []
    outbox = limits.Outbox(limit_bytes=10_000, on_ready=lambda: calls.append("ready"))

    for text in ("one", "two", "three"):
        outbox.put(item(text))
    assert calls == ["ready"]  # the sender is on its way: more items need no call

    assert messages_of(outbox.take()) == [message("one"), message("two"), message("three")]
    outbox.put(item("four"))  # after a take: the sender must come back for it
    outbox.put(item("five"))
    assert calls == ["ready", "ready"]
    assert messages_of(outbox.take()) == [message("four"), message("five")]
    assert outbox.take() == []  # empty, not closed


def test_closing_an_idle_outbox_calls_the_sender_so_that_it_can_stop():
    calls = []
    outbox = limits.Outbox(limit_bytes=10_000, on_ready=lambda: calls.append("ready"))

    outbox.close()

    assert calls == ["ready"]
    assert outbox.take() is None


# --- the client's pacer ------------------------------------------------------


def test_the_pacer_keeps_a_client_inside_the_servers_bucket_even_when_lines_bunch_up():
    # Lines leave when the pacer lets them; the server takes each up when it
    # gets to it: every tenth one 0.3 s late (a busy server), and the lines
    # queued behind it at once, so the gaps it sees shrink. TCP keeps them in
    # order: none is taken up before the one sent before it.
    sent, arrived = FakeClock(), FakeClock()
    pacer = limits.Pacer(RateLimit(burst=20, interval_ms=200), clock=sent)
    bucket = limits.TokenBucket(rate=5, burst=20, clock=arrived)

    for n in range(300):
        sent.advance(pacer.delay())
        arrived.now = max(arrived.now, sent.now + (0.3 if n % 10 == 0 else 0.0))
        assert bucket.take() == 0.0, f"line {n} refused"


def test_the_pacer_sends_a_paste_at_once_up_to_the_burst_then_spaces_the_rest():
    clock = FakeClock()
    pacer = limits.Pacer(RateLimit(burst=20, interval_ms=200), clock=clock)

    delays = []
    for _ in range(25):
        delays.append(pacer.delay())
        clock.advance(delays[-1])

    assert delays[:10] == [0.0] * 10  # half the burst: the other half is the margin
    assert all(d == pytest.approx(0.25) for d in delays[11:])


def test_the_pacer_never_waits_when_the_server_sets_no_limit():
    pacer = limits.Pacer(RateLimit(burst=0, interval_ms=0), clock=FakeClock())
    assert all(pacer.delay() == 0.0 for _ in range(100))


# --- the options -------------------------------------------------------------


def test_the_defaults_are_the_documented_ones():
    defaults = limits_from(parse_args([]))
    assert defaults == Limits()
    assert (defaults.max_clients, defaults.max_message_bytes, defaults.rate, defaults.burst) == (1000, 4096, 5, 20)
    assert (defaults.handshake_timeout, defaults.frame_timeout) == (5, 10)
    assert (defaults.max_per_address, defaults.handshake_rate, str(defaults.max_startups)) == (10, 1, "20:30:100")


def test_every_limit_is_an_option():
    args = parse_args(
        [
            "--max-clients",
            "7",
            "--max-message-bytes",
            "100",
            "--rate",
            "0.5",
            "--burst",
            "3",
            "--sendq",
            "65536",
            "--handshake-timeout",
            "2",
            "--username-timeout",
            "30",
            "--frame-timeout",
            "1.5",
            "--max-per-address",
            "3",
            "--handshake-rate",
            "0.5",
            "--max-startups",
            "4:50:8",
        ]
    )
    assert limits_from(args) == limits.Limits(
        max_clients=7,
        max_message_bytes=100,
        rate=0.5,
        burst=3,
        sendq_bytes=65536,
        handshake_timeout=2,
        username_timeout=30,
        frame_timeout=1.5,
        max_per_address=3,
        handshake_rate=0.5,
        max_startups=Startups(4, 50, 8),
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-clients", "0"],
        ["--max-clients", "many"],
        ["--burst", "0"],
        ["--rate", "-1"],
        ["--rate", "inf"],
        ["--rate", "nan"],
        ["--sendq", "-5"],
        ["--handshake-timeout", "0"],
        ["--max-message-bytes", str(MAX_MESSAGE_BYTES_CEILING + 1)],
        ["--max-per-address", "-1"],
        ["--handshake-rate", "fast"],
        ["--max-startups", "30:30:20"],
        ["--max-startups", "10:130:100"],
        ["--max-startups", "1:2"],
    ],
)
def test_a_bad_limit_is_a_clear_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error:" in error and argv[0] in error


@pytest.mark.parametrize("option", ["--rate", "--handshake-rate"])
def test_a_negative_rate_names_its_own_option(option, capsys):
    with pytest.raises(SystemExit):
        parse_args([option, "-1"])
    assert f"{option} must be 0 (no limit) or more" in capsys.readouterr().err


def test_the_client_is_told_the_rate_limit_it_must_keep():
    assert limits.Limits(rate=5, burst=20).rate_limit_message() == RateLimit(burst=20, interval_ms=200)
    assert limits.Limits(rate=0.5, burst=2).rate_limit_message() == RateLimit(burst=2, interval_ms=2000)
    assert limits.Limits(rate=0).rate_limit_message() == RateLimit(burst=0, interval_ms=0)
