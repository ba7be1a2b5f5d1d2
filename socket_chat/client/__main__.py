"""``python -m socket_chat.client``: the same program as ``python client.py``."""

import sys

from socket_chat.client.app import main

if __name__ == "__main__":
    sys.argv[0] = "python -m socket_chat.client"  # for --help and --version, as Python 3.14's argparse says it
    sys.exit(main())
