"""The chat client: ``python client.py`` (``--help`` for the options).

A launcher from a clone; installed, the same program is ``socket-chat`` or
``python -m socket_chat.client``. The code is in ``socket_chat/client/``.
"""

import sys

from socket_chat.client.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
