"""The sockets' side that both programs share: how much to read at a time,
how a connection is tuned, and how an address is written."""

from __future__ import annotations

import socket

__all__ = ["RECV_SIZE", "format_address", "tune"]

#: Bytes asked of one recv(): a whole frame (64 KiB) fits, so a burst of
#: records costs few system calls.
RECV_SIZE = 65536

#: TCP keepalive: find peers that vanished without a word (power cut, lost
#: network) within about two minutes instead of the kernel's two hours.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6


def format_address(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets, as ssh writes it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tune(sock: socket.socket, keepalive: bool = False) -> None:
    """Send each message at once; with ``keepalive``, also notice a peer
    that vanished (the server's side, which would otherwise keep it)."""
    # Every sendall is a whole message: don't let Nagle hold it back waiting
    # for an ACK (that costs a delayed-ACK wait, ~40 ms, per turn).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not keepalive:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):  # Linux and most others; if not, the system's defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
