"""Every failure is a documented type (issue 11, section 2): the base classes
are abstract, as h11's ProtocolError is, and the end of a direction's
sequence numbers surfaces from the connection as a ProtocolError, not as a
crypto error that slips past a writer's ``except``."""

from __future__ import annotations

import socket

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat.client import link as client_link
from socket_chat.crypto import (
    MAX_SEQUENCE,
    CryptoError,
    DecryptionError,
    KeyAgreementError,
    KeyFormatError,
    SequenceExhaustedError,
)
from socket_chat.protocol import (
    MAX_FRAME_SIZE,
    MAX_RECORDS,
    ConnectionState,
    Goodbye,
    LocalProtocolError,
    Notice,
    ProtocolError,
    RecordLimitError,
    RemoteProtocolError,
    connection,
    encode,
    encode_message,
)
from tests.wire import ConnectionPair, drain, line


@pytest.fixture
def pair(identity_key):
    pair = ConnectionPair(identity_key)
    pair.handshake()
    return pair


#: Records a direction may carry in these tests: 2**24 would take minutes
#: to reach, and both ends read the limit from ``connection`` each time.
FEW_RECORDS = 8


def at_the_last_record(pair, client_sends: bool, monkeypatch) -> None:
    """Make the next record of one direction the last but one it may carry
    (``MAX_RECORDS - 2``: the last is a Goodbye's), on both of its ends: the
    limit is lowered to ``FEW_RECORDS`` and lines go across up to it."""
    monkeypatch.setattr(connection, "MAX_RECORDS", FEW_RECORDS)
    sender, receiver = pair.sender_receiver(client_sends)
    while sender.records_sent < FEW_RECORDS - 2:
        sender.send(line(client_sends, "on the way"))
        assert pair.deliver(sender) == [line(client_sends, "on the way")]
    assert sender.records_sent == receiver.records_received == FEW_RECORDS - 2


# --- abstract bases ----------------------------------------------------------


def test_protocol_error_itself_cannot_be_raised():
    with pytest.raises(TypeError):
        ProtocolError("which side's fault?")
    for cls in (LocalProtocolError, RemoteProtocolError, RecordLimitError):
        assert isinstance(cls("a reason"), ProtocolError)
        assert str(cls("a reason")) == "a reason"


def test_crypto_error_itself_cannot_be_raised():
    with pytest.raises(TypeError):
        CryptoError("what failed?")
    for cls in (DecryptionError, KeyAgreementError, KeyFormatError, SequenceExhaustedError):
        assert isinstance(cls("a reason"), CryptoError)


def test_client_handshake_failure_is_a_remote_protocol_error():
    # establish() raised the bare base class when the server closed instead
    # of sending its hello.
    ours, theirs = socket.socketpair()
    theirs.close()
    link = client_link.ServerLink(ours)
    try:
        with pytest.raises(RemoteProtocolError, match="expected the server's hello"):
            client_link.establish(link, trust=lambda hello: None)
    finally:
        ours.close()


def test_a_public_key_in_another_form_is_a_key_format_error_not_a_value_error(identity_key):
    pem = identity_key.public_key().export_key(format="PEM")
    with pytest.raises(KeyFormatError) as caught:
        crypto_utils.import_public_key(pem)
    assert not isinstance(caught.value, ValueError)


# --- the last record of a direction ------------------------------------------


both_directions = pytest.mark.parametrize("client_sends", [True, False], ids=["client_sends", "server_sends"])


def test_a_direction_ends_well_before_the_aes_gcm_limit():
    # RFC 8446 section 5.5: AES-GCM keys carry at most 2**24.5 full-size records.
    assert MAX_RECORDS == connection.MAX_RECORDS == 2**24 < 2**24.5
    assert MAX_RECORDS - 1 < MAX_SEQUENCE


@both_directions
def test_the_last_ordinary_record_is_sent_and_received(pair, client_sends, monkeypatch):
    at_the_last_record(pair, client_sends, monkeypatch)
    sender, receiver = pair.sender_receiver(client_sends)
    sender.send(line(client_sends, "the last one"))
    assert pair.deliver(sender) == [line(client_sends, "the last one")]
    assert receiver.state is ConnectionState.OPEN


@both_directions
def test_sending_past_the_record_limit_is_a_record_limit_error_and_a_goodbye_still_goes(
    pair, client_sends, monkeypatch
):
    at_the_last_record(pair, client_sends, monkeypatch)
    sender, receiver = pair.sender_receiver(client_sends)
    sender.send(line(client_sends, "the last one"))
    pair.deliver(sender)

    with pytest.raises(RecordLimitError) as caught:
        sender.send(line(client_sends, "one too many"))
    # A LocalProtocolError, so a writer that catches ProtocolError ends the
    # connection cleanly; nothing was sealed, and the state is as it was.
    assert isinstance(caught.value, LocalProtocolError)
    assert sender.data_to_send() == b""
    assert sender.state is ConnectionState.OPEN
    with pytest.raises(RecordLimitError):
        sender.send(line(client_sends, "and again"))
    # The other direction still works.
    receiver.send(line(not client_sends, "still listening"))
    assert pair.deliver(receiver) == [line(not client_sends, "still listening")]
    # The last record says why the connection ends.
    sender.send(Goodbye("reconnect for new keys"))
    assert pair.deliver(sender) == [Goodbye("reconnect for new keys")]


def test_a_batch_needing_more_records_than_are_left_sends_nothing(pair, monkeypatch):
    at_the_last_record(pair, False, monkeypatch)
    big = [Notice("x" * (MAX_FRAME_SIZE // 2)), Notice("y" * (MAX_FRAME_SIZE // 2))]  # two records

    with pytest.raises(RecordLimitError):
        pair.server.send_batch([encode(message) for message in big])
    assert pair.server.data_to_send() == b""
    assert pair.server.state is ConnectionState.OPEN

    pair.server.send_batch([encode(Notice("a")), encode(Notice("b"))])  # one record: the last ordinary one
    assert pair.deliver(pair.server) == [Notice("a"), Notice("b")]


@both_directions
def test_receiving_past_the_record_limit_is_a_remote_protocol_error(pair, client_sends, monkeypatch):
    at_the_last_record(pair, client_sends, monkeypatch)
    sender, receiver = pair.sender_receiver(client_sends)
    sender.send(line(client_sends, "the last one"))
    # What a broken peer would send: a line in the Goodbye's place (the
    # receiver takes it: the record is authentic), then one past the limit,
    # under the nonce that follows, which the limit alone must refuse.
    sender.send_raw_record(encode_message(line(client_sends, "in the Goodbye's place")))
    assert pair.deliver(sender) == [line(client_sends, "the last one"), line(client_sends, "in the Goodbye's place")]
    sender.send_raw_record(encode_message(line(client_sends, "past the limit")))
    receiver.receive_data(sender.data_to_send())
    with pytest.raises(RemoteProtocolError, match="more records than a direction may carry"):
        drain(receiver)
    assert receiver.state is ConnectionState.ERROR
