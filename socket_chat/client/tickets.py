"""The client's resumption tickets (PROTOCOL.md section 2, "Resumption"):
one per server and person (the fingerprint of the key proved, or
``guest``), offered once on the next connection to it by the same person,
so that a reconnection costs the server no RSA. A ticket carries the key
it was got with: offered under another identity, it would make that
person the first.

In memory only, unless ``--keep-tickets``: then also in a file of the data
directory (mode 0600), one ``HOST:PORT PERSON FINGERPRINT EXPIRES TICKET
SECRET`` a line (the last two in base64), so that the next run of the
client resumes too. The file holds secrets: whoever reads it can resume once as
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

__all__ = ["GUEST", "TICKETS_FILE", "TicketWallet"]

TICKETS_FILE = "tickets"
GUEST = "guest"  # the person of a connection that proves no key

_Held = dict[tuple[str, str], tuple[ClientTicket, float]]

log = logging.getLogger("chat.client")


class TicketWallet:
    """The tickets held, by server (``HOST:PORT``) and person (the key's
    fingerprint, or ``GUEST``), each with its expiry.

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
        self._held: _Held = {}
        self._lock = threading.Lock()  # the receiver may put while the main thread takes
        if path is not None and path.exists():
            keystore.check_safe_path(path, "tickets file", private=True)
            with contextlib.suppress(OSError, UnicodeDecodeError):
                self._held = _read(path.read_text(encoding="ascii"))

    def peek(self, server: str, person: str) -> ClientTicket | None:
        """The ticket for ``server`` and ``person``, if one is held and not
        expired; still held (it may never be offered: a refusal, a failed
        key check), until ``spend``."""
        with self._lock:
            held = self._held.get((server, person))
        if held is None or held[1] <= self._clock():
            return None
        return held[0]

    def spend(self, server: str, person: str, ticket: ClientTicket) -> None:
        """``ticket`` was offered (a ticket is single use): gone from here,
        unless another has taken its place."""
        with self._lock:
            held = self._held.get((server, person))
            if held is not None and held[0] == ticket:
                del self._held[(server, person)]
                self._save()

    def put(self, server: str, person: str, ticket: ClientTicket, lifetime: int) -> None:
        """Keep ``ticket`` for ``server`` and ``person`` for ``lifetime``
        seconds, in place of any before."""
        with self._lock:
            self._held[(server, person)] = (ticket, self._clock() + lifetime)
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        now = self._clock()
        lines = [
            f"{server} {person} {ticket.server_fingerprint} {int(expires)}"
            f" {_b64(ticket.ticket)} {_b64(ticket.secret)}\n"
            for (server, person), (ticket, expires) in sorted(self._held.items())
            if expires > now
        ]
        try:
            keystore.replace_file(self.path, "".join(lines), "tickets file")
        except keystore.KeyFileError as exc:
            log.warning("%s", exc)  # the tickets still work in this run


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _read(text: str) -> _Held:
    held: _Held = {}
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) != 6:
            continue  # an older line names no person: whose it is, is unknown
        server, person, fingerprint, expires, ticket, secret = parts
        try:
            held[(server, person)] = (
                ClientTicket(
                    base64.b64decode(ticket, validate=True), base64.b64decode(secret, validate=True), fingerprint
                ),
                float(int(expires)),
            )
        except (ValueError, binascii.Error):
            continue
    return held
