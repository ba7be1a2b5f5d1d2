"""The server: its command line (``python -m socket_chat.server``), its
sockets and threads, and the operator console."""
