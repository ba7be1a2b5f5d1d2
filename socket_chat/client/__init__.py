"""The client: its command line (``python -m socket_chat.client``), the
connection to the server, and what the person sees.

Its modules, each importing only those before it: ``config`` (the settings
file), ``ui`` (commands, rendering and completion, without I/O), ``link``
(connecting, the handshake, the trust in the server's key), ``receiver``
(the thread that reads the socket, and how events are shown), ``conversation``
(the chat: typed lines sent while the receiver shows), ``session`` (the
username, the first events, reconnecting) and ``__main__`` (the command line).
"""
