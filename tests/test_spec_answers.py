"""PROTOCOL.md's answers where a second implementation had to guess (issue 11,
section 4): one test or a few per answer, named after what they check.

Protocol-level answers use a ClientConnection and a ServerConnection over a
fake wire (``ConnectionPair`` from tests/wire.py); the running server's
behaviour uses a real server on loopback. Every socket read has a timeout;
where a test shows that something is *not* sent, a later request answered in
order (a UserListRequest) marks the point by which it would have come.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import socket
import struct
import threading
from pathlib import Path

import pytest
from Cryptodome.Util.asn1 import DerSequence

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.chat.member import USERNAME_INVALID
from socket_chat.client import ui as client_ui
from socket_chat.crypto import MAX_SEQUENCE, EphemeralKey, RecordSealer, SequenceExhaustedError
from socket_chat.protocol import (
    NEED_DATA,
    ActionLine,
    ActionMessage,
    ChatLine,
    ChatMessage,
    ConnectionClosed,
    ConnectionState,
    ErrorNotice,
    Goodbye,
    HandshakeComplete,
    Motd,
    NickRequest,
    Notice,
    PrivateLine,
    PrivateMessage,
    RateLimit,
    RemoteProtocolError,
    ServerConnection,
    ServerHello,
    UserJoined,
    UserLeft,
    UserList,
    UserListRequest,
    Username,
    UsernameRequest,
    UserParted,
    Welcome,
)
from tests import procs
from tests.wire import (
    HEADER_SIZE,
    LENGTH_AT,
    SHARE_AT,
    ConnectionPair,
    advance,
    drain,
    flip_byte,
    frame,
)

SPEC = Path(__file__).parent.parent / "PROTOCOL.md"
TIMEOUT = 5.0  # seconds for any one expected event

P = 2**255 - 19
#: X25519 shares of low order, whose result is all zero (RFC 7748 section 6.1;
#: cr.yp.to/ecdh.html#validate lists them), and one in its form plus p.
LOW_ORDER_SHARES = {
    "zero": 0,
    "one": 1,
    "order-8": 325606250916557431795983626356110631294008115727848805560023387167927233504,
    "order-8-other": 39382357235489614581723060781553021112529911719440698176882885853963445705823,
    "p-minus-1": P - 1,
    "p-plus-1": P + 1,
}


def share(u: int) -> bytes:
    return u.to_bytes(32, "little")


def reframed(whole_frame: bytes, body_change) -> bytes:
    """A frame whose body is ``body_change(body)``, with the header to match."""
    return frame(body_change(whole_frame[HEADER_SIZE:]))


def spec_section(number: int) -> str:
    text = SPEC.read_text(encoding="utf-8")
    return re.search(rf"^## {number}\. .*?(?=^## )", text, re.M | re.S).group(0)


def barrier(client) -> UserList:
    """Ask for the user list and return it: everything the server sent this
    client before answering has arrived by then (one outbox, one order)."""
    client.send(UserListRequest())
    return client.expect(UserList)


# --- section 1: a close in the middle of a frame -------------------------------


def test_a_close_in_the_middle_of_a_record_is_a_lost_connection_and_delivers_nothing(identity_key):
    pair = ConnectionPair(identity_key)
    pair.handshake()
    pair.server.send(Notice("cut short"))
    record = pair.server.data_to_send()

    pair.client.receive_data(record[:-1])
    assert drain(pair.client) == []
    pair.client.receive_data(b"")
    assert drain(pair.client) == [ConnectionClosed(clean=False)]
    assert pair.client.state is ConnectionState.CLOSED


def test_the_server_takes_a_client_closing_mid_record_for_gone_not_for_a_protocol_error(connect, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    ann, bob = connect("Ann"), connect("Bob")
    ann.conn.send(ChatLine("never finished"))
    record = ann.conn.data_to_send()
    ann.sock.sendall(record[:-1])
    ann.sock.shutdown(socket.SHUT_WR)  # a FIN, not a reset, whatever Ann has left unread

    assert bob.expect(UserLeft) == UserLeft("Ann")
    # Ann's connection ends after the server has logged all it will about it.
    assert ann.wait_closed() == ConnectionClosed(clean=False)
    assert "Ann left" in caplog.messages
    assert not [m for m in caplog.messages if "protocol error" in m]


def serve_one_client_then_cut_a_record(listener: socket.socket, identity_key, failures: list) -> None:
    """A server for one client.py: the handshake, a name, the user list, then
    a Notice cut one byte short and the connection closed."""
    try:
        sock, _ = listener.accept()
        with sock:
            sock.settimeout(TIMEOUT)
            conn = ServerConnection(protocol.ServerIdentity.of(identity_key))

            def next_event():
                while (event := conn.next_event()) is NEED_DATA:
                    sock.sendall(conn.data_to_send())
                    conn.receive_data(sock.recv(65536))
                sock.sendall(conn.data_to_send())
                return event

            sock.sendall(conn.data_to_send())
            assert isinstance(next_event(), HandshakeComplete)
            conn.send_batch(
                [protocol.encode(RateLimit(0, 0)), protocol.encode(UsernameRequest("Please enter a username."))]
            )
            sock.sendall(conn.data_to_send())
            asked = next_event()
            if isinstance(asked, protocol.TicketRequest):  # a server that gives no resumption tickets
                conn.send(protocol.NewTicket(0, b""))
                asked = next_event()
            name = asked.name
            conn.send(Welcome(name))
            sock.sendall(conn.data_to_send())
            assert isinstance(next_event(), UserListRequest)
            conn.send(UserList.of([(name, 0)]))
            conn.send(Notice("cut short"))
            sock.sendall(conn.data_to_send()[:-1])
            sock.shutdown(socket.SHUT_WR)
    except Exception as exc:  # reported by the test, not lost in this thread
        failures.append(exc)


def test_the_client_program_reports_a_close_mid_record_as_a_lost_connection(identity_key, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    failures: list = []
    server = threading.Thread(target=serve_one_client_then_cut_a_record, args=(listener, identity_key, failures))
    server.start()
    chat = procs.start_client(tmp_path, listener.getsockname()[1], "cut", "--name", "Ann")
    try:
        assert chat.wait(procs.TIMEOUT) == 1
        assert chat.stderr.text() == "Connection to server lost.\n"
        assert "cut short" not in chat.stdout.text()
    finally:
        chat.kill()
        listener.close()
        server.join(TIMEOUT)
    assert failures == []


# --- section 2: checking the hellos ------------------------------------------


@pytest.mark.parametrize("u", LOW_ORDER_SHARES.values(), ids=LOW_ORDER_SHARES.keys())
def test_the_client_refuses_a_low_order_server_share_and_sends_nothing(identity_key, u):
    pair = ConnectionPair(identity_key)
    hello = pair.server.data_to_send()
    pair.client.receive_data(hello[: SHARE_AT.start] + share(u) + hello[SHARE_AT.stop :])

    with pytest.raises(RemoteProtocolError, match="invalid X25519 public key"):
        pair.client.next_event()
    assert pair.client.state is ConnectionState.ERROR
    assert pair.client.data_to_send() == b""


@pytest.mark.parametrize("u", LOW_ORDER_SHARES.values(), ids=LOW_ORDER_SHARES.keys())
def test_the_server_refuses_a_low_order_client_share_without_sending_hi(identity_key, u):
    pair = ConnectionPair(identity_key)
    advance(pair, 2)  # hello delivered, key accepted
    key_exchange = pair.client.data_to_send()
    pair.server.data_to_send()  # the hello, already on its way

    pair.server.receive_data(key_exchange[: SHARE_AT.start] + share(u) + key_exchange[SHARE_AT.stop :])
    with pytest.raises(RemoteProtocolError, match="invalid X25519 public key"):
        pair.server.next_event()
    assert pair.server.data_to_send() == b""


@pytest.mark.parametrize("u", [9, 12345, P - 2], ids=["9", "12345", "p-minus-2"])
def test_a_share_is_decoded_as_rfc_7748_says_top_bit_ignored_and_modulo_p(u):
    key = EphemeralKey(bytes(range(32)))
    expected = key.agree(share(u))
    assert key.agree(share(u | 1 << 255)) == expected
    if u + P < 2**255:
        assert key.agree(share(u + P)) == expected


def test_a_byte_after_the_server_hello_is_a_protocol_error(identity_key):
    pair = ConnectionPair(identity_key)
    pair.client.receive_data(reframed(pair.server.data_to_send(), lambda body: body + b"\x00"))
    with pytest.raises(RemoteProtocolError, match="trailing bytes"):
        pair.client.next_event()
    assert pair.client.data_to_send() == b""


def test_a_byte_after_the_key_exchange_is_a_protocol_error_and_no_hi_is_sent(identity_key):
    pair = ConnectionPair(identity_key)
    advance(pair, 2)
    key_exchange = pair.client.data_to_send()
    pair.server.data_to_send()
    pair.server.receive_data(reframed(key_exchange, lambda body: body + b"\x00"))
    with pytest.raises(RemoteProtocolError, match="trailing bytes"):
        pair.server.next_event()
    assert pair.server.data_to_send() == b""


def test_a_frame_after_the_hello_before_the_key_exchange_is_a_protocol_error(identity_key):
    pair = ConnectionPair(identity_key)
    hello = pair.server.data_to_send()
    pair.client.receive_data(hello + frame(b"\x01"))
    assert isinstance(pair.client.next_event(), ServerHello)
    with pytest.raises(RemoteProtocolError):
        pair.client.next_event()
    assert pair.client.data_to_send() == b""


@pytest.mark.parametrize("form", ["PEM", "OpenSSH", "PKCS#1"])
def test_the_client_refuses_a_server_key_in_another_encoding(identity_key, form):
    public = identity_key.public_key()
    other = {
        "PEM": public.export_key(format="PEM"),
        "OpenSSH": public.export_key(format="OpenSSH"),
        "PKCS#1": DerSequence([public.n, public.e]).encode(),  # RSAPublicKey: no algorithm identifier
    }[form]
    pair = ConnectionPair(identity_key)
    hello = pair.server.data_to_send()
    body = hello[HEADER_SIZE : LENGTH_AT.start] + struct.pack("!H", len(other)) + other
    pair.client.receive_data(frame(body))
    with pytest.raises(RemoteProtocolError, match="bad server hello: not an RSA public key"):
        pair.client.next_event()
    assert pair.client.data_to_send() == b""


# --- section 2: a failed key confirmation ------------------------------------


def test_the_server_sends_nothing_after_a_client_hi_that_fails(identity_key):
    pair = ConnectionPair(identity_key)
    advance(pair, 4)  # the client has the server's HI and has answered
    client_hi = pair.client.data_to_send()

    pair.server.receive_data(flip_byte(client_hi, -1))
    with pytest.raises(RemoteProtocolError):
        pair.server.next_event()
    assert pair.server.data_to_send() == b""  # no OK, no Goodbye
    assert pair.server.state is ConnectionState.ERROR


def test_the_client_sends_nothing_after_a_server_hi_that_fails(identity_key):
    pair = ConnectionPair(identity_key)
    advance(pair, 3)  # the key exchange delivered: the server's HI is ready
    server_hi = pair.server.data_to_send()

    pair.client.receive_data(flip_byte(server_hi, -1))
    with pytest.raises(RemoteProtocolError):
        pair.client.next_event()
    assert pair.client.data_to_send() == b""  # no HI of its own


def handshake_up_to_the_client_hi(own_server):
    """A client whose HI is made but not sent: (the test client, its HI)."""
    chat = own_server.client(handshake=False)
    assert isinstance(chat.next_event(), ServerHello)
    chat.conn.accept_server_key()
    chat.flush()
    answer = b""
    while not answer:  # read the server's HI here, so that the answer waits for the test
        chat.conn.receive_data(chat.sock.recv(65536))
        assert chat.conn.next_event() is NEED_DATA
        answer = chat.conn.data_to_send()
    return chat, answer


def test_the_server_closes_at_once_when_the_client_hi_fails_to_authenticate(own_server):
    own_server.start(handshake_timeout=60.0)
    chat, client_hi = handshake_up_to_the_client_hi(own_server)

    chat.sock.sendall(flip_byte(client_hi, -1))
    # Long before the 60 s deadline, and with nothing sent (an OK would
    # complete the client's handshake).
    assert chat.next_event(TIMEOUT) == ConnectionClosed(clean=False)


def test_the_server_waits_for_the_client_hi_only_until_the_handshake_deadline(own_server):
    own_server.start(handshake_timeout=0.5)
    chat, _ = handshake_up_to_the_client_hi(own_server)  # never sent

    assert chat.next_event(TIMEOUT) == ConnectionClosed(clean=False)  # without a word


# --- sections 3 and 6: the last record ---------------------------------------


def test_a_direction_carries_2_to_the_24_records_though_the_nonce_would_allow_2_to_the_64():
    assert protocol.MAX_RECORDS == 2**24  # AES-GCM's limit per key (RFC 8446 section 5.5), not the nonce's
    key, iv = bytes(32), bytes(12)
    sealer = RecordSealer(key, iv, first_sequence=MAX_SEQUENCE)
    sealer.seal(b"the last nonce")
    with pytest.raises(SequenceExhaustedError):
        sealer.seal(b"one too many")
    assert MAX_SEQUENCE + 1 == 2**64


def test_sections_3_and_6_state_the_same_rule_for_the_last_record():
    rule = "2^24 - 1"
    assert "0 to " + rule in spec_section(3)
    assert "0 to " + rule in spec_section(6)
    assert "would pass" not in spec_section(3)


# --- section 4: messages -----------------------------------------------------


def test_user_list_request_is_the_type_byte_alone():
    assert protocol.encode_message(UserListRequest()) == b"\x16"
    assert isinstance(protocol.decode_message(b"\x16\x00\x00"), protocol.MalformedMessage)


def test_user_list_entries_are_name_tab_decimal_seconds_separated_by_lf():
    message = UserList.of([("alice", 3725), ("Bob", 0)])
    entries = b"alice\t3725\nBob\t0"
    assert protocol.encode_message(message) == b"\x17" + struct.pack("!H", len(entries)) + entries


def test_user_list_is_sorted_by_case_folded_name(connect):
    for name in ["Zoë", "alice"]:
        connect(name)
    bob = connect("Bob")
    entries = barrier(bob).entries.split("\n")
    assert [entry.split("\t")[0] for entry in entries] == ["alice", "Bob", "Zoë"]  # not Bob, Zoë, alice
    assert all(re.fullmatch(r"[^\t\n]+\t(0|[1-9][0-9]*)", entry) for entry in entries), entries


@pytest.mark.parametrize(
    "message",
    [ChatLine("hi"), ActionLine("waves"), PrivateLine("Bob", "psst"), NickRequest("Ann"), UserListRequest()],
    ids=lambda m: type(m).__name__,
)
def test_a_message_before_a_username_is_accepted_gets_choose_a_username_first(connect, message):
    newcomer = connect()
    newcomer.send(message)
    assert newcomer.expect(ErrorNotice) == ErrorNotice("Choose a username first.")
    newcomer.join("Ann")  # the connection stays


def test_a_second_username_gets_username_is_not_expected_now(connect):
    ann = connect("Ann")
    ann.send(Username("Annie"))
    assert ann.expect(ErrorNotice) == ErrorNotice("Username is not expected now.")


def test_a_private_line_to_oneself_gives_one_private_message_and_no_receipt(connect):
    ann = connect("Ann")
    ann.send(PrivateLine("ANN", "note to self"))
    assert ann.expect(PrivateMessage) == PrivateMessage("Ann", "Ann", "note to self")
    barrier(ann)  # the next thing to arrive: no second copy came before it


# --- section 4: Goodbye --------------------------------------------------------


def test_the_server_never_answers_a_goodbye(connect):
    ann, bob = connect("Ann"), connect("Bob")
    assert ann.expect(UserJoined) == UserJoined("Bob")  # nothing more is on its way to Ann
    ann.send(Goodbye(""))
    assert ann.next_event() == ConnectionClosed(clean=False)  # no Goodbye back, nothing at all
    assert bob.expect(UserLeft) == UserLeft("Ann")


def test_a_goodbye_with_a_parting_line_shows_it_to_the_others(connect):
    ann, bob = connect("Ann"), connect("Bob")
    ann.expect(UserJoined)
    ann.send(Goodbye("good night"))
    assert ann.next_event() == ConnectionClosed(clean=False)
    assert bob.expect(UserParted) == UserParted("Ann", "good night")


def test_a_blank_parting_line_gets_the_empty_message_notice_and_a_plain_user_left(connect):
    ann, bob = connect("Ann"), connect("Bob")
    ann.expect(UserJoined)
    ann.send(Goodbye("   "))
    assert ann.expect(ErrorNotice) == ErrorNotice("An empty message was not sent.")
    assert ann.next_event() == ConnectionClosed(clean=False)
    assert bob.expect(UserLeft) == UserLeft("Ann")


def test_a_too_long_parting_line_gets_the_size_notice_and_a_plain_user_left(own_server):
    own_server.start(max_message_bytes=10)
    ann, bob = own_server.client("Ann"), own_server.client("Bob")
    ann.expect(UserJoined)
    ann.send(Goodbye("x" * 11))
    assert ann.expect(ErrorNotice) == ErrorNotice("The message was not sent: it is 11 bytes long, and the limit is 10.")
    assert ann.next_event() == ConnectionClosed(clean=False)
    assert bob.expect(UserLeft) == UserLeft("Ann")


def test_a_goodbye_before_joining_leaves_without_a_word_and_its_reason_is_ignored(connect):
    bob = connect("Bob")
    newcomer = connect()
    newcomer.send(Goodbye("x" * 10_000))  # over the line limit: not even refused
    assert newcomer.next_event() == ConnectionClosed(clean=False)
    # The server has let the newcomer go (it closes last): Bob was told nothing.
    assert [name for name, _ in barrier(bob).members()] == ["Bob"]


def test_a_record_after_a_goodbye_is_never_acted_on(connect):
    ann, bob = connect("Ann"), connect("Bob")
    ann.expect(UserJoined)
    ann.conn.send(Goodbye(""))
    goodbye = ann.conn.data_to_send()
    # send() refuses to send after a Goodbye; seal the record as it is, as a
    # peer breaking the rule would.
    ann.conn.send_raw_record(protocol.encode_message(ChatLine("after goodbye")))
    after = ann.conn.data_to_send()
    ann.sock.sendall(goodbye + after)

    # A reset is also fine: the record was still unread in the kernel when the server closed.
    with contextlib.suppress(ConnectionResetError):
        assert ann.next_event() == ConnectionClosed(clean=False)  # no ErrorNotice about it either
    assert bob.next_event() == UserLeft("Ann")  # and no ChatMessage before it
    assert [name for name, _ in barrier(bob).members()] == ["Bob"]  # nor after


def test_a_receiver_that_reads_past_a_goodbye_reports_data_after_goodbye(identity_key):
    pair = ConnectionPair(identity_key)
    pair.handshake()
    pair.client.send(Goodbye(""))
    goodbye = pair.client.data_to_send()
    pair.server.receive_data(goodbye + frame(bytes(20)))
    assert pair.server.next_event() == Goodbye("")
    with pytest.raises(RemoteProtocolError, match="data after Goodbye"):
        pair.server.next_event()


# --- section 4: the rate limit as announced ----------------------------------


@pytest.mark.parametrize(
    ("rate", "interval_ms"), [(5, 200), (3, 333), (7, 143), (80, 12), (400, 2), (5000, 1), (0.3, 3333)]
)
def test_interval_ms_is_1000_over_rate_rounded_half_to_even_and_at_least_1(own_server, rate, interval_ms):
    own_server.start(rate=rate, burst=7)
    assert own_server.client().rate_limit == RateLimit(burst=7, interval_ms=interval_ms)


def test_rate_0_is_announced_as_0_0(own_server):
    own_server.start(rate=0, burst=7)
    assert own_server.client().rate_limit == RateLimit(burst=0, interval_ms=0)


# --- section 4: display and usernames ----------------------------------------


def test_control_characters_are_shown_as_u_fffd_and_tab_as_one_space():
    text = "a\x1b[31mb\x07\x7f\x9b\u200b\u202e\u00a0c\nd\re\tf"
    assert client_ui.render(ActionMessage("Ann\tLee", text)) == [
        "* Ann Lee a\ufffd[31mb\ufffd\ufffd\ufffd\ufffd\ufffd\ufffdc\ufffdd\ufffde f"
    ]
    # In a chat line an LF separates the lines of a block (PROTOCOL.md,
    # "Multi-line messages"): each is cleaned, and the later ones indented.
    assert client_ui.render(ChatMessage("Ann\tLee", text)) == [
        "Ann Lee: a\ufffd[31mb\ufffd\ufffd\ufffd\ufffd\ufffd\ufffdc\n" + " " * 9 + "d\ufffde f"
    ]


def test_joiners_stay_where_they_join_and_are_replaced_where_they_do_not():
    text = "\U0001f469\u200d\U0001f4bb \u0645\u06cc\u200c\u062e \u200d\u202e"
    assert client_ui.render(ChatMessage("Ann", text)) == [
        "Ann: \U0001f469\u200d\U0001f4bb \u0645\u06cc\u200c\u062e \ufffd\ufffd"
    ]


def test_a_motd_is_cut_into_lines_at_lf_before_each_line_is_cleaned():
    assert client_ui.render(Motd("one\n\ttwo\x1b")) == ["[motd] one", "[motd]  two\ufffd"]


@pytest.mark.parametrize(
    ("typed", "accepted"),
    [
        ("e\u0301" * 32, "\u00e9" * 32),  # 64 code points typed, 32 after NFC
        ("\U0001f389" * 32, "\U0001f389" * 32),  # 128 bytes of UTF-8, 32 code points
        ("  " + "a" * 32 + "\t", "a" * 32),  # white space around is trimmed first
    ],
    ids=["combining", "emoji", "trimmed"],
)
def test_username_length_is_counted_in_code_points_after_nfc(connect, typed, accepted):
    assert connect().join(typed) == Welcome(accepted)


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("\u00e9" * 33, "is longer than 32 characters"),
        ("a\u200bb", "contains an invisible character (U+200B)"),
        ("a\tb", "contains a character that cannot be shown (U+0009)"),
    ],
    ids=["33-code-points", "zero-width-space-inside", "tab-inside"],
)
def test_a_username_over_32_code_points_or_not_printable_is_refused(connect, typed, reason):
    newcomer = connect()
    newcomer.send(Username(typed))
    assert newcomer.expect(UsernameRequest).prompt == USERNAME_INVALID.format(reason=reason)


def test_a_space_separator_inside_a_username_becomes_a_plain_space(connect):
    # PROTOCOL.md, "Usernames": the no-break space a keyboard types and the
    # ideographic space of an input method are shown as what they are.
    assert connect().join("a\u00a0\u3000b") == Welcome("a b")


# --- section 5: fingerprints -------------------------------------------------


def standard_base64_digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


@pytest.mark.parametrize("character", ["+", "/"])
def test_fingerprints_are_standard_base64_without_padding(character):
    # Bytes whose digest holds a character the standard and URL-safe
    # alphabets write differently (URL-safe has - and _).
    data = next(bytes([i]) for i in range(256) if character in standard_base64_digest(bytes([i])))
    fingerprint = crypto_utils.fingerprint(data)
    assert fingerprint == "SHA256:" + standard_base64_digest(data).rstrip("=")
    assert character in fingerprint and "=" not in fingerprint
    assert re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", fingerprint)
