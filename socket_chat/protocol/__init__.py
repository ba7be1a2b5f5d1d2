"""The chat protocol, sans I/O: bytes in, events out; messages in, bytes out.

No sockets, threads, prints or logging live here (the style of h11). The
caller owns the socket and drives a connection object:

    conn.receive_data(data)           # what recv() returned; b"" at EOF
    while (event := conn.next_event()) is not NEED_DATA:
        ...                           # react to the event
    sock.sendall(conn.data_to_send()) # whatever the connection wrote

and, once ``conn.state is ConnectionState.OPEN``:

    conn.send(ChatLine("hi"))
    sock.sendall(conn.data_to_send())

A server with several messages waiting for one client seals them together
(``conn.send_batch(messages)``): one record, one cipher setup. The receiver
gets the same events, one per message, as if they had come one by one.

PROTOCOL.md is the specification. The package follows its sections, one
concern a module (as h11 does), each importing only those above it here:

- ``errors``: whose fault it was (``LocalProtocolError``,
  ``RemoteProtocolError``, ``RecordLimitError``);
- ``schema``: a message field's wire type, read off its annotation;
- ``messages``: the application messages, and which role sends which;
- ``events``: what ``next_event()`` returns besides them, and ``NEED_DATA``;
- ``framing``: frames and the receive buffer (section 1);
- ``codec``: messages and Batches to bytes and back (section 4);
- ``handshake``: the handshake's messages on the wire (section 2);
- ``state``: the states and the table of their transitions;
- ``connection``: the connection objects, which drive it all, and the
  record layer's limit (section 3).

This module re-exports the public API below; ``may_be_server_greeting``
is importable from here too.
"""

from __future__ import annotations

from socket_chat.protocol.codec import (
    BATCH_TYPE,
    Encoded,
    decode_message,
    decode_record,
    encode,
    encode_batch,
    encode_message,
)
from socket_chat.protocol.connection import MAX_RECORDS, ClientConnection, ServerConnection
from socket_chat.protocol.errors import LocalProtocolError, ProtocolError, RecordLimitError, RemoteProtocolError
from socket_chat.protocol.events import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    MalformedMessage,
    ResumptionOffered,
    ServerHello,
    ServerRefused,
)
from socket_chat.protocol.framing import MAX_FRAME_SIZE
from socket_chat.protocol.handshake import PROTOCOL_VERSION, ClientTicket, ServerIdentity, refusal
from socket_chat.protocol.handshake import may_be_server_greeting as may_be_server_greeting  # not in __all__, as before
from socket_chat.protocol.messages import (
    GREETING_NAMES,
    GUEST_MARK,
    HISTORY_PAGE,
    MAX_HISTORY_PAGE,
    MAX_ROOM_NAME_LENGTH,
    MAX_TOPIC_LENGTH,
    MAX_USERNAME_LENGTH,
    ActionLine,
    ActionMessage,
    Away,
    AwayReply,
    Back,
    ChatLine,
    ChatMessage,
    DeviceAdd,
    DeviceList,
    DeviceListRequest,
    DeviceRemove,
    EchoOwnLines,
    ErrorNotice,
    Goodbye,
    Greeting,
    HistoryLine,
    HistoryMessage,
    HistoryRequest,
    Joined,
    KeyProof,
    MentionsRequest,
    Message,
    Motd,
    Multiline,
    MultilineOffer,
    NewTicket,
    NickChanged,
    NickRequest,
    Notice,
    OfflineMessage,
    OperatorCommand,
    OperatorStatus,
    PageEnd,
    Parted,
    PrivateLine,
    PrivateMessage,
    ProofRequest,
    RateLimit,
    RoomHistoryLine,
    RoomLine,
    RoomList,
    RoomMembers,
    RoomMessage,
    RoomNotice,
    RoomRequest,
    Rooms,
    SearchRequest,
    SearchResult,
    StampedLine,
    Stamps,
    TicketRequest,
    Unread,
    UserBanned,
    UserJoined,
    UserKicked,
    UserLeft,
    UserList,
    UserListRequest,
    Username,
    UsernameDeadline,
    UsernameRequest,
    UserParted,
    Welcome,
    WhoisReply,
    WhoisRequest,
)
from socket_chat.protocol.state import ConnectionState

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_FRAME_SIZE",
    "MAX_USERNAME_LENGTH",
    "NEED_DATA",
    "Event",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "RecordLimitError",
    "MAX_RECORDS",
    "ConnectionState",
    "ServerHello",
    "ServerRefused",
    "HandshakeComplete",
    "ConnectionClosed",
    "MalformedMessage",
    "Message",
    "UsernameRequest",
    "Username",
    "Welcome",
    "ChatLine",
    "ChatMessage",
    "UserJoined",
    "UserLeft",
    "Notice",
    "ErrorNotice",
    "Goodbye",
    "RateLimit",
    "PrivateLine",
    "PrivateMessage",
    "ActionLine",
    "ActionMessage",
    "NickRequest",
    "NickChanged",
    "UserListRequest",
    "UserList",
    "HistoryMessage",
    "Motd",
    "UserParted",
    "UserKicked",
    "Greeting",
    "GREETING_NAMES",
    "GUEST_MARK",
    "Away",
    "Back",
    "AwayReply",
    "UsernameDeadline",
    "EchoOwnLines",
    "ProofRequest",
    "KeyProof",
    "WhoisReply",
    "WhoisRequest",
    "DeviceAdd",
    "DeviceRemove",
    "DeviceListRequest",
    "DeviceList",
    "SearchRequest",
    "SearchResult",
    "OfflineMessage",
    "OperatorCommand",
    "OperatorStatus",
    "UserBanned",
    "Stamps",
    "StampedLine",
    "HistoryRequest",
    "HistoryLine",
    "PageEnd",
    "Unread",
    "MentionsRequest",
    "HISTORY_PAGE",
    "MAX_HISTORY_PAGE",
    "TicketRequest",
    "NewTicket",
    "MultilineOffer",
    "Multiline",
    "MAX_ROOM_NAME_LENGTH",
    "MAX_TOPIC_LENGTH",
    "Rooms",
    "RoomRequest",
    "RoomLine",
    "RoomMessage",
    "RoomNotice",
    "Joined",
    "Parted",
    "RoomList",
    "RoomMembers",
    "RoomHistoryLine",
    "ResumptionOffered",
    "ClientTicket",
    "ClientConnection",
    "ServerConnection",
    "ServerIdentity",
    "BATCH_TYPE",
    "Encoded",
    "encode",
    "encode_message",
    "decode_message",
    "encode_batch",
    "decode_record",
    "refusal",
]
