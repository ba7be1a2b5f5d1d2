"""The chat protocol's public API, sans I/O: bytes in, events out.

This file is a face: the protocol lives in ``socket_chat/protocol/`` and
PROTOCOL.md is its specification. A program drives one connection object
and owns the socket itself:

    conn = ClientConnection()                          # or ServerConnection(identity)
    conn.receive_data(data)                            # what recv() returned; b"" at EOF
    while (event := conn.next_event()) is not NEED_DATA:
        ...                                            # react to the event
    sock.sendall(conn.data_to_send())                  # whatever the connection wrote

Once ``conn.state is ConnectionState.OPEN`` it sends messages
(``conn.send(ChatLine("hi"))``) and turns each received record into one
event per message. Every name in ``__all__`` below is re-exported from
``socket_chat.protocol``.
"""

from socket_chat.protocol import *  # noqa: F403 (the face re-exports the package's API)
from socket_chat.protocol import __all__ as __all__
from socket_chat.protocol import may_be_server_greeting as may_be_server_greeting  # as the old module had it
