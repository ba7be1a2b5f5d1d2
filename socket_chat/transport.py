"""The sockets' side that both programs share: how much to read at a time,
how a connection is tuned, and how an address is written."""

from __future__ import annotations

import socket

__all__ = ["RECV_SIZE", "format_address", "is_tuned", "tune"]

#: Bytes asked of one recv(): a whole frame (64 KiB) fits, so a burst of
#: records costs few system calls.
RECV_SIZE = 65536

#: TCP keepalive: find peers that vanished without a word (power cut, lost
#: network) within about two minutes instead of the kernel's two hours.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6


def format_address(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets, as ssh writes it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _options(keepalive: bool) -> list[tuple[int, int, int]]:
    """(level, option, value) of each socket option ``tune`` sets."""
    # Every sendall is a whole message: don't let Nagle hold it back waiting
    # for an ACK (that costs a delayed-ACK wait, ~40 ms, per turn).
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    if keepalive:
        options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ):
            if hasattr(socket, name):  # Linux and most others; if not, the system's defaults
                options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def tune(sock: socket.socket, keepalive: bool = False) -> None:
    """Send each message at once; with ``keepalive``, also notice a peer
    that vanished (the server's side, which would otherwise keep it).

    On a listening socket it tunes what it accepts, where the system lets
    an accepted socket inherit its listener's options (Linux does, for all
    of these): the server then tunes its listener once instead of making
    five system calls per connection (see ``is_tuned``)."""
    for level, option, value in _options(keepalive):
        sock.setsockopt(level, option, value)


def is_tuned(sock: socket.socket, keepalive: bool = False) -> bool:
    """Whether ``sock`` already has every option ``tune`` would set: asked
    of the first socket accepted from a tuned listener, to learn whether
    this system passes them on."""
    try:
        return all(sock.getsockopt(level, option) == value for level, option, value in _options(keepalive))
    except OSError:  # an option the system lists but this socket refuses
        return False
