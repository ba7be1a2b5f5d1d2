"""socket-chat: a secure terminal group chat.

The folders are its layers, each importing only those below it:

- ``crypto``: the server's identity key, the handshake's key agreement and
  the sealed records (no chat, no sockets);
- ``protocol``: the messages, their encoding and framing, and each side's
  connection state machine (bytes in, events out; no sockets);
- ``chat``: the chat's rules: the room, a member's session, names,
  presence, commands and limits (no sockets);
- ``transport``, ``tty`` and ``cli``: what the two programs share: socket
  tuning, the terminal, and the command line's common parts;
- ``server`` and ``client``: the two programs, at the edges, where the
  sockets and threads are; neither imports the other.

``tests/test_layers.py`` checks the rule.
"""

__version__ = "1.0.0"
