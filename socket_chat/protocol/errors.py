"""Whose fault it was: the protocol's errors (PROTOCOL.md section 5).

As in h11 (``_util.py``), every failure is a ``LocalProtocolError`` (this
side misused the API; nothing changed) or a ``RemoteProtocolError`` (the
peer broke the protocol; the connection is in ``ERROR``), both under an
abstract ``ProtocolError`` that a writer can catch whole. Internal bugs are
``assert``s, not protocol errors.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "LocalProtocolError", "RemoteProtocolError", "RecordLimitError"]


class ProtocolError(Exception):
    """Base class: the protocol cannot go on as asked. Abstract, as in h11:
    what is raised is always a ``LocalProtocolError`` or a
    ``RemoteProtocolError``, which say whose fault it was."""

    def __init__(self, *args: object) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract: raise LocalProtocolError or RemoteProtocolError")
        super().__init__(*args)


class LocalProtocolError(ProtocolError):
    """This side misused the API (for example sent before the handshake).

    The connection's state is left as it was.
    """


class RecordLimitError(LocalProtocolError):
    """This side has sealed as many records as its direction may carry
    (``MAX_RECORDS``, PROTOCOL.md section 3) but the last: nothing more can
    be sent but a Goodbye, which should say why, and the caller must then
    close the connection (the person may reconnect, with new keys).

    The state is left as it was (receiving still works), and every later
    ``send`` raises again.
    """


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: a bad frame, a forged or replayed record,
    a handshake that does not check out. The connection is in ``ERROR``."""
