"""The message codec (PROTOCOL.md section 4): each message round-trips, the
type numbers and the field encodings are the specification's, and bytes
that are not a message decode to a ``MalformedMessage``."""

from __future__ import annotations

import dataclasses

import pytest

from socket_chat import protocol
from socket_chat.protocol import (
    ChatLine,
    ChatMessage,
    Goodbye,
    HistoryMessage,
    LocalProtocolError,
    MalformedMessage,
    Message,
    RateLimit,
    UserList,
    UserListRequest,
)
from socket_chat.protocol.messages import MESSAGE_TYPES
from socket_chat.protocol.schema import FieldSpec, FieldType, field_specs
from tests.wire import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
)


@pytest.mark.parametrize("message", CLIENT_MESSAGES + SERVER_MESSAGES, ids=repr)
def test_codec_round_trip(message):
    assert protocol.decode_message(protocol.encode_message(message)) == message


def test_codec_type_numbers_are_the_specs():
    assert {cls.__name__: cls.TYPE for cls in Message.__subclasses__()} == {
        "UsernameRequest": 0x01,
        "Username": 0x02,
        "Welcome": 0x03,
        "ChatLine": 0x04,
        "ChatMessage": 0x05,
        "UserJoined": 0x06,
        "UserLeft": 0x07,
        "Notice": 0x08,
        "ErrorNotice": 0x09,
        "Goodbye": 0x0A,
        "RateLimit": 0x0B,
        "PrivateLine": 0x10,
        "PrivateMessage": 0x11,
        "ActionLine": 0x12,
        "ActionMessage": 0x13,
        "NickRequest": 0x14,
        "NickChanged": 0x15,
        "UserListRequest": 0x16,
        "UserList": 0x17,
        "HistoryMessage": 0x18,
        "Motd": 0x19,
        "UserParted": 0x1A,
        "UserKicked": 0x1B,
        "Greeting": 0x1C,
        "Away": 0x1D,
        "Back": 0x1E,
        "AwayReply": 0x1F,
        "UsernameDeadline": 0x20,
        "EchoOwnLines": 0x21,
        "ProofRequest": 0x22,
        "KeyProof": 0x23,
        "WhoisRequest": 0x24,
        "WhoisReply": 0x25,
        "DeviceAdd": 0x38,
        "DeviceRemove": 0x39,
        "DeviceListRequest": 0x3A,
        "DeviceList": 0x3B,
        "SearchRequest": 0x48,
        "SearchResult": 0x49,
        "OfflineMessage": 0x4A,
        "OperatorCommand": 0x30,
        "OperatorStatus": 0x31,
        "UserBanned": 0x32,
        "Stamps": 0x40,
        "StampedLine": 0x41,
        "HistoryRequest": 0x42,
        "HistoryLine": 0x43,
        "PageEnd": 0x44,
        "Unread": 0x45,
        "MentionsRequest": 0x46,
        "TicketRequest": 0x52,
        "NewTicket": 0x53,
        "MultilineOffer": 0x60,
        "Multiline": 0x61,
        "Rooms": 0x64,
        "RoomRequest": 0x65,
        "RoomLine": 0x66,
        "RoomMessage": 0x67,
        "RoomNotice": 0x68,
        "Joined": 0x69,
        "Parted": 0x6A,
        "RoomList": 0x6B,
        "RoomMembers": 0x6C,
        "RoomHistoryLine": 0x6D,
    }


def test_user_list_round_trips_names_with_spaces_and_skips_lines_that_do_not_parse():
    listed = UserList.of([("Randall Flagg", 0), ("Zoë", 125)])
    assert protocol.decode_message(protocol.encode_message(listed)).members() == [("Randall Flagg", 0), ("Zoë", 125)]
    assert UserList("Ann\t3\nno tab\nBob\tx\n\t4").members() == [("Ann", 3)]


def test_user_list_carries_away_messages_in_a_third_field():
    listed = UserList.of([("Ann", 3), ("Bob", 5), ("Cy", 9)], {"Bob": "lunch", "Cy": "", "nobody": "x"})
    assert listed.entries == "Ann\t3\nBob\t5\tlunch\nCy\t9\t"
    assert listed.members() == [("Ann", 3), ("Bob", 5), ("Cy", 9)]
    assert listed.away() == {"Bob": "lunch", "Cy": ""}


def test_message_without_fields_is_its_type_byte_alone():
    assert protocol.encode_message(UserListRequest()) == b"\x16"
    assert isinstance(protocol.decode_message(b"\x16\x00"), MalformedMessage)  # trailing bytes


def test_encoding_is_type_then_length_prefixed_utf8_fields():
    assert protocol.encode_message(ChatMessage("Zoë", "hi")) == b"\x05\x00\x04Zo\xc3\xab\x00\x02hi"
    assert protocol.encode_message(Goodbye("")) == b"\x0a\x00\x00"


def test_longest_field_round_trips_and_one_byte_more_is_refused():
    longest = ChatLine("x" * 0xFFFF)
    assert protocol.decode_message(protocol.encode_message(longest)) == longest
    with pytest.raises(LocalProtocolError):
        protocol.encode_message(ChatLine("x" * 0x10000))
    with pytest.raises(LocalProtocolError):  # bytes of UTF-8 count, not characters
        protocol.encode_message(ChatLine("é" * 0x8000))


def test_encode_of_unencodable_text_is_a_local_protocol_error():
    with pytest.raises(LocalProtocolError):
        protocol.encode_message(ChatLine("\udce9"))


MALFORMED = {
    "empty": b"",
    "unknown-type-0": b"\x00\x00\x00",
    "unknown-type-11": b"\x0b\x00\x00",
    "unknown-type-255": b"\xff",
    "no-field": b"\x04",
    "half-a-length": b"\x04\x00",
    "field-cut-short": b"\x04\x00\x05abc",
    "second-field-missing": b"\x05\x00\x01a",
    "invalid-utf8": b"\x04\x00\x01\xff",
    "utf8-surrogate": b"\x04\x00\x03\xed\xa0\x80",
    "utf8-overlong": b"\x04\x00\x02\xc0\xaf",
    "trailing-bytes": protocol.encode_message(ChatLine("hi")) + b"\x00",
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_decode_of_malformed_payload_is_malformed_message(payload):
    result = protocol.decode_message(payload)
    assert isinstance(result, MalformedMessage)
    assert result.reason


def test_message_fields_must_be_str():
    with pytest.raises(TypeError):
        ChatLine(b"bytes")


def test_numeric_fields_are_u32_on_the_wire():
    assert protocol.encode_message(RateLimit(burst=20, interval_ms=200)) == bytes.fromhex("0b 00000014 000000c8")


@pytest.mark.parametrize("value", [-1, 2**32, 1.5, "20", True])
def test_a_numeric_field_refuses_what_u32_cannot_carry(value):
    with pytest.raises(TypeError):
        RateLimit(burst=value, interval_ms=200)


def test_a_truncated_numeric_field_is_malformed():
    assert isinstance(protocol.decode_message(bytes.fromhex("0b 00000014 0000")), MalformedMessage)


def test_a_message_that_cannot_be_encoded_fails_every_time():
    for _ in range(2):
        with pytest.raises(LocalProtocolError):
            protocol.encode_message(ChatLine("lone \ud800 surrogate"))


# --- the field specs ------------------------------------------------------------


def test_field_specs_are_the_fields_in_order_with_their_wire_types():
    assert field_specs(RateLimit) == (FieldSpec("burst", FieldType.U32), FieldSpec("interval_ms", FieldType.U32))
    assert field_specs(HistoryMessage) == (
        FieldSpec("sender", FieldType.TEXT),
        FieldSpec("text", FieldType.TEXT),
        FieldSpec("sent_at", FieldType.U32),
        FieldSpec("kind", FieldType.TEXT),
    )
    assert field_specs(UserListRequest) == ()


def message_class(annotations: dict, postponed: bool) -> type:
    """A class shaped as a message of type 0x7E, its annotations strings (as
    under ``from __future__ import annotations``) or the types themselves.

    Not a ``Message`` subclass (it borrows the check its values get), so
    that it is not taken for one of the protocol's messages anywhere else.
    """
    fields = [(name, kind.__name__ if postponed else kind) for name, kind in annotations.items()]
    namespace = {"TYPE": 0x7E, "__post_init__": Message.__post_init__}
    return dataclasses.make_dataclass("Probe", fields, namespace=namespace, frozen=True)


@pytest.mark.parametrize("postponed", [True, False], ids=["strings", "types"])
def test_wire_types_do_not_depend_on_how_annotations_are_written(postponed):
    cls = message_class({"count": int, "text": str}, postponed)
    assert field_specs(cls) == (FieldSpec("count", FieldType.U32), FieldSpec("text", FieldType.TEXT))
    assert protocol.encode_message(cls(5, "hi")) == bytes.fromhex("7e 00000005 0002") + b"hi"
    with pytest.raises(TypeError):
        cls("5", "hi")


def test_a_field_the_wire_cannot_carry_is_refused_when_first_used():
    cls = message_class({"ratio": float}, postponed=False)
    with pytest.raises(TypeError, match="a message field is str, bytes or int"):
        cls(0.5)


@pytest.mark.parametrize("cls", sorted(MESSAGE_TYPES.values(), key=lambda c: c.TYPE), ids=lambda c: c.__name__)
def test_a_decoded_message_is_the_one_encoded_and_as_frozen(cls):
    # decode_message makes a message without running __post_init__ again
    # (what it read has each field's type): it must still be the same value,
    # hash alike, and refuse changes, as one made by its constructor does.
    samples = {FieldType.TEXT: "héllo", FieldType.BYTES: b"\x00\xffkey", FieldType.U32: 2**32 - 1}
    message = cls(*(samples[spec.type] for spec in field_specs(cls)))
    decoded = protocol.decode_message(protocol.encode_message(message))
    assert type(decoded) is cls and decoded == message and hash(decoded) == hash(message)
    assert repr(decoded) == repr(message)
    for spec in field_specs(cls)[:1]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(decoded, spec.name, samples[spec.type])
