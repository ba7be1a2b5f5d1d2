"""The client's resumption tickets (PROTOCOL.md section 2, "Resumption"):
one per server, offered once on the next connection to it, so that a
reconnection costs the server no RSA.

In memory only, unless ``--keep-tickets``: then also in a file of the data
directory (mode 0600), one ``HOST:PORT FINGERPRINT EXPIRES TICKET SECRET``
a line (the last two in base64), so that the next run of the client
resumes too. The file holds secrets: whoever reads it can resume once as
this client, within the ticket's lifetime (SECURITY.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from socket_chat.crypto import keystore
from socket_chat.protocol import ClientTicket

__all__ = ["TICKETS_FILE", "TicketWallet"]

TICKETS_FILE = "tickets"

log = logging.getLogger("chat.client")


class TicketWallet:
    """The tickets held, by server (``HOST:PORT``), each with its expiry.

    Args:
        path: the file to keep them in too (``--keep-tickets``), or None.
        clock: Unix time.

    Raises (on construction):
        keystore.KeyFileError: the file is readable by others, or in a place
            others can change. Lines it cannot read are dropped, not errors:
            a ticket is only a shortcut.
    """

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path, self._clock = path, clock
        self._held: dict[str, tuple[ClientTicket, float]] = {}
        self._lock = threading.Lock()  # the receiver may put while the main thread takes
        if path is not None and path.exists():
            keystore.check_safe_path(path, "tickets file", private=True)
            with contextlib.suppress(OSError, UnicodeDecodeError):
                self._held = _read(path.read_text(encoding="ascii"))

    def take(self, server: str) -> ClientTicket | None:
        """The ticket for ``server``, if one is held and not expired; it is
        given once (a ticket is single use), so it is gone from here."""
        with self._lock:
            held = self._held.pop(server, None)
            self._save()
        if held is None or held[1] <= self._clock():
            return None
        return held[0]

    def put(self, server: str, ticket: ClientTicket, lifetime: int) -> None:
        """Keep ``ticket`` for ``server`` for ``lifetime`` seconds, in place
        of any before."""
        with self._lock:
            self._held[server] = (ticket, self._clock() + lifetime)
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        now = self._clock()
        lines = [
            f"{server} {ticket.server_fingerprint} {int(expires)} {_b64(ticket.ticket)} {_b64(ticket.secret)}\n"
            for server, (ticket, expires) in sorted(self._held.items())
            if expires > now
        ]
        try:
            keystore.replace_file(self.path, "".join(lines), "tickets file")
        except keystore.KeyFileError as exc:
            log.warning("%s", exc)  # the tickets still work in this run


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _read(text: str) -> dict[str, tuple[ClientTicket, float]]:
    held = {}
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) != 5:
            continue
        server, fingerprint, expires, ticket, secret = parts
        try:
            held[server] = (
                ClientTicket(
                    base64.b64decode(ticket, validate=True), base64.b64decode(secret, validate=True), fingerprint
                ),
                float(int(expires)),
            )
        except (ValueError, binascii.Error):
            continue
    return held
