"""The cryptography's public API: the server's identity key, the handshake's
key agreement, and the sealed records.

This file is a face: the code lives in ``socket_chat/crypto/`` (PROTOCOL.md
says what each piece does on the wire, SECURITY.md what it protects and
what not). Every name in ``__all__`` below is re-exported from
``socket_chat.crypto``.
"""

from socket_chat.crypto import *  # noqa: F403 (the face re-exports the package's API)
from socket_chat.crypto import MAX_SEQUENCE as MAX_SEQUENCE  # as the old module had them
from socket_chat.crypto import RSA as RSA
from socket_chat.crypto import __all__ as __all__
