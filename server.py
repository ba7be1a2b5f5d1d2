"""The chat server: ``python server.py`` (``--help`` for the options).

A launcher from a clone; installed, the same program is ``socket-chat-server``
or ``python -m socket_chat.server``. The code is in ``socket_chat/server/``.
"""

import sys

from socket_chat.server.command_line import main

if __name__ == "__main__":
    sys.exit(main())
