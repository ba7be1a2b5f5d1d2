"""``python -m socket_chat.server``: the same program as ``python server.py``."""

import sys

from socket_chat.server.command_line import main

if __name__ == "__main__":
    sys.argv[0] = "python -m socket_chat.server"  # for --help and --version, as Python 3.14's argparse says it
    sys.exit(main())
