"""The client: its command line (``python -m socket_chat.client``), the
connection to the server, and what the person sees."""
