"""Open files for the clients: the server's share of the descriptor limit.

Each client holds a socket open (and so does each connection still in its
handshake, up to ``--max-startups``), and with ``--cluster`` possibly a Redis
connection too (redis-py opens one for each thread that calls at the same
time, and each client's reader thread publishes its lines). A process may
have ``RLIMIT_NOFILE`` open at once: a soft limit it may raise itself, up to
the hard limit only root can lift. Many systems start a process at a soft
limit of 1,024, which a busy server passes long before ``--max-clients``.

So at start the server raises its soft limit to the hard one (as Go's
runtime does for every program), and refuses to start, saying what to do,
where the hard limit is too low for ``--max-clients``. Where the ``resource``
module is missing (Windows), nothing is checked.
"""

from __future__ import annotations

from collections.abc import Callable

try:
    import resource
except ImportError:  # Windows: no such limit to raise
    resource = None  # type: ignore[assignment]

__all__ = ["BASE", "DescriptorLimitError", "needed", "raise_limit"]

#: Descriptors the server holds whatever its clients: stdin/out/err, the
#: listener, the wake-up pair, a selector, the cluster's own connections,
#: the key file while it is read, and a margin for connections accepted only
#: to be told the server is full.
BASE = 64
PER_CLIENT = 1  # its socket
PER_CLIENT_CLUSTERED = 2  # its socket, and at worst a Redis connection of its own

_GetLimit = Callable[[int], tuple[int, int]]
_SetLimit = Callable[[int, tuple[int, int]], None]


class DescriptorLimitError(Exception):
    """The hard limit on open files is too low for ``--max-clients``; the
    message says what to do."""


def needed(max_clients: int, clustered: bool = False, handshakes: int = 0) -> int:
    """Open files a server of ``max_clients`` people, and at most
    ``handshakes`` connections in their handshake besides, may need at once."""
    return BASE + max_clients * (PER_CLIENT_CLUSTERED if clustered else PER_CLIENT) + handshakes


def raise_limit(
    max_clients: int,
    clustered: bool = False,
    handshakes: int = 0,
    getrlimit: _GetLimit | None = None,
    setrlimit: _SetLimit | None = None,
) -> int | None:
    """Raise the soft limit on open files to the hard limit if it is below
    what ``max_clients`` need. Returns the soft limit now in force (None
    where there is none to check). ``getrlimit``/``setrlimit``: the
    ``resource`` module's, unless a test gives its own.

    Raises:
        DescriptorLimitError: the hard limit is below what is needed, or the
            system refuses to raise the soft one.
    """
    if resource is None:
        return None
    get = getrlimit or resource.getrlimit
    put = setrlimit or resource.setrlimit
    want = needed(max_clients, clustered, handshakes)
    soft, hard = get(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= want:
        return soft
    if hard != unlimited and hard < want:
        raise DescriptorLimitError(_too_low(max_clients, clustered, handshakes, want, hard))
    # Unlimited hard limit (macOS): ask for what is needed, not "infinity",
    # which the kernel refuses for a soft limit there.
    target = want if hard == unlimited else hard
    try:
        put(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        raise DescriptorLimitError(
            f"--max-clients {max_clients} needs {want} open files, and the system refused to raise "
            f"this process's limit from {soft} to {target}: {exc}. Lower --max-clients, or raise "
            "the limit before starting the server (ulimit -n)."
        ) from None
    return target


def _too_low(max_clients: int, clustered: bool, handshakes: int, want: int, hard: int) -> str:
    per_client = PER_CLIENT_CLUSTERED if clustered else PER_CLIENT
    fits = max(0, (hard - BASE - handshakes) // per_client)
    what = "a socket and, with --cluster, a Redis connection" if clustered else "a socket"
    also = f", {handshakes} for connections in their handshake (--max-startups)" if handshakes else ""
    return (
        f"--max-clients {max_clients} needs {want} open files ({what} for each client{also}, and {BASE} "
        f"for the server), but this system allows the server at most {hard} (the hard limit, "
        f"ulimit -Hn). Use --max-clients {fits} or less, or have the administrator raise the "
        "hard limit (limits.conf, or LimitNOFILE= in a systemd unit)."
    )
