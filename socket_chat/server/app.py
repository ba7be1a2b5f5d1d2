"""The chat server: the listening socket, the accept loop, and a reader
thread per connection (``handler.ClientHandler``).

What the room puts in a client's bounded outbox is sealed and sent by the
server's one sender thread (``sender``). The chat's rules are in
``socket_chat.chat`` and know nothing of sockets; who may connect is
``admission``'s, the operator console ``console``'s, the command line
``command_line``'s.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from typing import TYPE_CHECKING

from socket_chat import cli, protocol, transport
from socket_chat import crypto as crypto_utils
from socket_chat.chat import names
from socket_chat.chat.allow import AllowList, key_fingerprint
from socket_chat.chat.bans import MAX_BAN_SECONDS, Ban, Bans, banned_text, parse_target
from socket_chat.chat.history import HistoryStore, HistoryUnavailable
from socket_chat.chat.limits import Limits
from socket_chat.chat.member import MemberSession, line_id_of
from socket_chat.chat.offline import OfflineMessages
from socket_chat.chat.presentation import format_length, printable_text
from socket_chat.chat.registrations import NameRegistry, RegistryUnavailable
from socket_chat.chat.room import DEFAULT_HISTORY, Cluster, Room
from socket_chat.chat.rooms import RoomCaps, RoomRefused, Rooms
from socket_chat.protocol import Notice, ServerIdentity
from socket_chat.server import admission
from socket_chat.server.allow_file import AllowFile, AllowFileError
from socket_chat.server.console import CONSOLE, OperatorConsole
from socket_chat.server.effort import EffortController
from socket_chat.server.handler import SHUTDOWN_GRACE, ClientHandler, server_full
from socket_chat.server.handshakes import HandshakeThread
from socket_chat.server.sender import Sender
from socket_chat.server.store import SqliteStore
from socket_chat.server.tickets import TicketService

if TYPE_CHECKING:
    from socket_chat.server.cluster_rooms import ClusterRooms

__all__ = ["ChatServer", "REFUSALS", "SHUTTING_DOWN"]

SHUTTING_DOWN = "Server is shutting down."
#: Refusals before the handshake (``admission``), short: the client shows
#: them as an unauthenticated reason.
REFUSALS = {
    admission.Why.SOURCE_CONNECTIONS: "Too many connections from your address ({max_per_address}).",
    admission.Why.SOURCE_RATE: "Too many new connections from your address. Try again in {retry_after:.0f} s.",
    admission.Why.STARTUPS: "The server is busy with new connections. Try again in a few seconds.",
}

NO_REGISTRATIONS = "This server registers no names: there is nothing to release."
RELEASE_UNREACHABLE = "The cluster cannot be reached: nothing was released. Try again once it is back."
NO_ALLOW_FILE = "This server admits everyone: start it with --allow FILE to admit only the keys in FILE."
#: Seconds between two reads of a cluster's bans: a ban set on another
#: server closes the connections here that it covers within this time.
BAN_SWEEP = 2.0
MAX_BAN_REASON = 200  # characters, as an away message: it is shown in /bans and to whoever is banned
NO_FILES = (
    "There is nothing to read again: start the server with --allow FILE (only its keys get in) "
    "or --operators FILE (its keys may run the operator's commands from their client)."
)

log = logging.getLogger("chat.server")


def _operator(by: str) -> str:
    """Who acted, for the log: ``the console``, or ``the operator NAME (SHA256:...)``."""
    return by if by == CONSOLE else f"the operator {by}"


def _keys(count: int) -> str:
    return "1 key" if count == 1 else f"{count} keys"


class ChatServer:
    """Listens for clients and runs a ``ClientHandler`` thread for each.

    Methods for the caller:
        serve_forever(): accept connections until ``shutdown()``.
        shutdown(): from another thread; returns once the loop has stopped.
        server_close(): tell every client the server is shutting down, close
            the connections and wait for their threads, then write what the
            history store still has queued and close it. ``with`` calls it.
        who(), away_messages(), names(), locate(name), kick(name, reason),
            notify_all(text), guests(), reload_allow_list(),
            invite(fingerprint, name), release(name): what the operator console may ask
            (``console.ServerControls``).
        allowed(): the allow list now (``--allow``), or None: open to all.
        operators_list(): the operators now (``--operators``), or None.
        ban(target, seconds, reason, by), unban(target, by), ban_lines():
            the bans (the console's and the operators' /ban, /unban, /bans).
        operate(session, command, argument): an operator's command from
            their client (a member session's ``operate``).

    Attributes:
        handler_class: what serves one connection (as socketserver's
            RequestHandlerClass).
        sender_class: the thread that seals and sends for every client
            (``sender``); the benchmark swaps in one that seals a record per
            message, as before batching.
        log_messages: log the text of public lines (off: metadata only).
        handshaking: held by a reader while its connection works out a
            handshake's cryptography (never while it waits for the
            network). One at a time: pycryptodomex lets go of the GIL
            around each of its C calls, so a thousand clients reconnecting
            at once would otherwise run a thousand RSA unwraps side by
            side, all of them slow, handing the GIL round at every call;
            one at a time, each is done in a few milliseconds and the first
            are back in at once (the reconnect storm in docs/benchmarks.md).
    """

    handler_class: type[ClientHandler] = ClientHandler
    sender_class: type[Sender] = Sender
    #: Put the text of public lines and actions in the log (--log-messages);
    #: otherwise only who sent one, and its length.
    log_messages: bool = False

    def __init__(
        self,
        identity_key: crypto_utils.RSA.RsaKey,
        host: str = "0.0.0.0",
        port: int = cli.DEFAULT_PORT,
        limits: Limits = Limits(),
        history: int = DEFAULT_HISTORY,
        motd: str = "",
        cluster: Cluster | None = None,
        store: SqliteStore | None = None,
        kept: HistoryStore | None = None,
        offline: OfflineMessages | None = None,
        allow: AllowFile | None = None,
        registrations: NameRegistry | None = None,
        operators: AllowFile | None = None,
        bans: Bans | None = None,
        tickets: TicketService | bool = True,
        ban_sweep: float = BAN_SWEEP,
        rooms: RoomCaps | None = None,
    ) -> None:
        self.allow = allow  # --allow: only its keys get in
        self.operators = operators  # --operators: its keys may run the operator's commands
        # Kept in the store's file if there is one, else in memory.
        self.bans = bans if bans is not None else Bans(store)
        self.ban_sweep = ban_sweep  # seconds between two reads of shared bans
        self.registrations = registrations  # registered names, or None: none are (registrations.py)
        # Private lines kept for a registered name's key while it is offline
        # (offline.py): in the store's file, or in memory without one; in a
        # cluster, only where they are given (``offline``: in its Redis,
        # cluster_history.ClusterOffline), as each server would keep its own.
        if offline is None and registrations is not None and cluster is None:
            offline = OfflineMessages(store)
        self.offline = offline if registrations is not None else None
        self.identity = ServerIdentity.of(identity_key)
        #: Resumption tickets (tickets.py): given with keys in memory unless
        #: a service is passed (the command line keeps them in a file or in
        #: the cluster); None (``tickets=False``): none given, none taken.
        self.tickets: TicketService | None = (
            TicketService(self.identity) if tickets is True else tickets if isinstance(tickets, TicketService) else None
        )
        self.limits = limits
        self.handshaking: contextlib.AbstractContextManager[object] = threading.Lock()
        self.handshakes = HandshakeThread(lambda: self.handshaking)  # the readers' handshake cryptography
        self.store = store  # the history on disk (store.py); closed by server_close
        # ``kept``: without a store, where the room keeps what it knows by key
        # (when each person left, their away state): with a cluster, its
        # Redis (cluster_history.ClusterHistory); None: in memory.
        self.room = Room(history_size=history, motd=motd, cluster=cluster, store=store if store is not None else kept)
        #: The rooms besides the lobby (chat/rooms.py); in a cluster on Redis,
        #: rooms that span its servers (cluster_rooms.py); none with another
        #: cluster (a room's order would be this server's alone).
        caps = rooms or RoomCaps()
        self.rooms: Rooms | None = None
        self._spanning: ClusterRooms | None = None  # self.rooms, when they span the cluster
        if cluster is None:
            self.rooms = Rooms(self.room, history, caps.max_rooms, caps.per_person, caps.room_size, store=store)
        elif getattr(cluster, "shares_rooms", False):
            from socket_chat.server.cluster_rooms import ClusterRooms  # only with --cluster: it needs redis

            self.rooms = self._spanning = ClusterRooms(
                cluster,  # type: ignore[arg-type]  # a RedisCluster: it shares rooms
                self.room,
                history,
                caps.max_rooms,
                caps.per_person,
                caps.room_size,
            )
        self.admission = admission.Admission(
            limits.max_clients,
            limits.max_per_address,
            limits.handshake_rate,
            startups=limits.max_startups,
            work=EffortController(limits.max_work) if limits.max_work else None,
        )
        self._refusals = admission.RefusalLog()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self._family = family
        # Tuned once here: Linux hands the options to every accepted socket,
        # which then costs no setsockopt (the first accept checks it).
        with contextlib.suppress(OSError):  # a system that refuses them on a listener: tuned per socket
            transport.tune(self._listener, keepalive=True)
        self._tune_each: bool | None = None  # None: not known until the first accept
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._handlers: dict[ClientHandler, threading.Thread] = {}
        self._handlers_lock = threading.Lock()
        self._shutdown_request = threading.Event()
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self.sender = self.sender_class()
        self.sender.start()
        self.room.cluster.start()
        if self._spanning is not None:
            self._spanning.start()

    @property
    def fingerprint(self) -> str:
        """The server key's fingerprint, as clients are shown it."""
        return self.identity.fingerprint

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server_close()

    def serve_forever(self) -> None:
        self._serving.set()
        if self.bans.shared:
            threading.Thread(target=self._sweep_bans, name="ban sweep", daemon=True).start()
        try:
            poller = select.poll()
            poller.register(self._listener, select.POLLIN)
            poller.register(self._wake_reader, select.POLLIN)
            while not self._shutdown_request.is_set():
                if any(fd == self._listener.fileno() for fd, _ in poller.poll()):
                    self._accept()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._shutdown_request.set()
        self._wake_writer.send(b"\0")
        if self._serving.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        self._listener.close()
        with self._handlers_lock:
            handlers = dict(self._handlers)
        for handler in handlers:
            handler.close(SHUTTING_DOWN)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for handler, thread in handlers.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                handler.abort()
                thread.join(SHUTDOWN_GRACE)
        self.sender.stop()
        self.handshakes.stop()
        if self._spanning is not None:
            self._spanning.stop()
        self.room.cluster.close()
        if self.store is not None:
            self.store.close()  # last: the members are gone, nothing more is kept
        self._wake_reader.close()
        self._wake_writer.close()

    def forget(self, handler: ClientHandler) -> None:
        """Called by a handler's reader thread as its last act."""
        if handler.ticket is not None:  # first: once it is out of the table, its place is free
            self.admission.release(handler.ticket)
        with self._handlers_lock:
            self._handlers.pop(handler, None)

    def connection_count(self) -> int:
        with self._handlers_lock:
            return len(self._handlers)

    # What the operator console asks (console.ServerControls).

    def who(self) -> list[tuple[str, int]]:
        """(name, seconds online) of everyone in the chat, on every server."""
        return self.room.who()

    def away_messages(self) -> dict[str, str]:
        """The away message of everyone away, by name."""
        return self.room.away_messages()

    def names(self) -> list[str]:
        """The names of the members on this server (the ones it can kick)."""
        return self.room.names()

    def locate(self, name: str) -> str | None:
        """The name as its holder has it, if someone on another server of
        the cluster holds it."""
        return self.room.cluster.locate(name)

    def kick(self, name: str, reason: str = "", by: str = CONSOLE) -> bool:
        """Remove the member called ``name`` from this server: the others
        are told, and the member is told why before the connection closes.
        False if no one of that name is here."""
        membership = self.room.find(name)
        if membership is None:
            return False
        because = f": {reason}" if reason else "."
        self.room.leave(membership, kicked=reason)  # one notice for the others, not a leave after it
        log.info("%s kicked by %s%s", membership.name, _operator(by), printable_text(because))  # no ESC to the console
        membership.member.close(f"You were kicked by the operator{because}")
        return True

    def close_room(self, room: str, reason: str = "", by: str = CONSOLE) -> list[str]:
        """Close a room: everyone in it is told why, and it is gone."""
        if self.rooms is None:
            return ["This server has no rooms (its cluster does not share them)."]
        try:
            said = self.rooms.close(room, reason)
        except RoomRefused as refused:
            return [str(refused)]
        log.info("%s closed by %s", printable_text(room), _operator(by))
        return [said]

    def kick_from_room(self, room: str, name: str, reason: str = "", by: str = CONSOLE) -> list[str]:
        """Take ``name`` out of a room (not out of the chat)."""
        if self.rooms is None:
            return ["This server has no rooms (its cluster does not share them)."]
        try:
            said = self.rooms.kick(room, name, reason)
        except RoomRefused as refused:
            return [str(refused)]
        log.info("%s kicked from %s by %s", printable_text(name), printable_text(room), _operator(by))
        return [said]

    def guests(self) -> set[str]:
        """The names of the guests online (no key proved)."""
        return self.room.guests()

    def allowed(self) -> AllowList | None:
        """The allow list now, or None if the server admits anyone."""
        return None if self.allow is None else self.allow.current

    def operators_list(self) -> AllowList | None:
        """The operators now (``--operators``), or None: the console alone."""
        return None if self.operators is None else self.operators.current

    def reload_allow_list(self) -> list[str]:
        """Read the allow file and the operators file again (SIGHUP, the
        console's /reload); what happened, as lines for the operator."""
        if self.allow is None and self.operators is None:
            return [NO_FILES]
        lines = [] if self.allow is None else self._reload_allow()
        return lines if self.operators is None else lines + self._reload_operators()

    def _reload_operators(self) -> list[str]:
        """Read the operators file again; the old list stays if it cannot be
        used. Members whose standing changed are told (OperatorStatus)."""
        assert self.operators is not None
        try:
            listed = self.operators.reload()
        except AllowFileError as exc:
            log.warning("%s; the operators file was not reloaded: the old list stays.", exc)
            return [f"{exc}", "The operators file was not reloaded: the old list stays."]
        line = f"Reloaded the operators file {self.operators.path}: {_keys(len(listed))} of operators."
        log.info("%s", line)
        for handler in self._handlers_now():
            if handler.session is not None:  # else still in its handshake: told when its session starts
                handler.session.recheck_operator()
        return [line]

    def _reload_allow(self) -> list[str]:
        """Read the allow file again; what happened, as lines for the
        operator, logged too. If the file cannot be used the old list stays.
        Members already in stay whether their key is still listed or not, as
        ssh keeps its sessions; the lines name them, for /kick."""
        assert self.allow is not None
        try:
            allowed = self.allow.reload()
        except AllowFileError as exc:
            log.warning("%s; the allow file was not reloaded: the old list stays.", exc)
            return [f"{exc}", "The allow file was not reloaded: the old list stays."]
        lines = [f"Reloaded the allow file {self.allow.path}: {_keys(len(allowed))} let in."]
        log.info("%s", lines[0])
        return lines + self._no_longer_invited(allowed)

    def invite(self, fingerprint: str, name: str | None = None, comment: str = "") -> list[str]:
        """Let ``fingerprint`` in (or the key of an OpenSSH key's two words,
        reserving ``name`` for it): a line added to the allow file, which is
        then in force; lines for the operator."""
        if self.allow is None:
            return [NO_ALLOW_FILE]
        try:
            added = self.allow.invite(fingerprint, name, comment)
        except AllowFileError as exc:
            return [f"Not invited: {exc}"]
        fingerprint = key_fingerprint(fingerprint)  # a key is said by its fingerprint, as ssh-keygen -l does
        if not added:
            return [f"{fingerprint} is invited already{f' with the name {name}' if name else ''}."]
        reserved = f", the name {name} theirs alone" if name else ""
        log.info("Invited %s%s, in %s", fingerprint, reserved, self.allow.path)
        return [f"Invited {fingerprint}{reserved}: {_keys(len(self.allow.current))} let in now."]

    def release(self, name: str, by: str = CONSOLE) -> list[str]:
        """Free a registered name (the console's /release); lines for the operator."""
        if self.registrations is None:
            return [NO_REGISTRATIONS]
        try:
            released = self.registrations.release(name)
        except RegistryUnavailable:
            return [RELEASE_UNREACHABLE]
        if released is None:
            return [f"No key has the name {printable_text(name)} registered."]
        log.info("Released the name %s (registered to %s) for %s", released.name, released.fingerprint, _operator(by))
        return [f"Released {printable_text(released.name)}: it was registered to {released.fingerprint}."]

    def forget_line(self, line_id: str) -> list[str]:
        """Take a line out of the history, memory and store (the console's
        /forget); lines for the operator. Clients that showed it keep it."""
        shown = printable_text(line_id)[:40]
        if not (line_id.isascii() and line_id.isdigit()):
            return [f"{shown} is not a message ID: IDs are numbers (clients show them with --ids)."]
        number = line_id_of(line_id)
        try:
            forgotten = number is not None and self.room.forget(number)
        except HistoryUnavailable:
            return ["The history store did not answer; nothing was forgotten. Try again."]
        if not forgotten:
            return [f"No line {shown} is in the history."]
        log.info("Forgot the line %s for the operator", line_id)
        return [f"Forgot the line {shown}: newcomers and /history no longer get it."]

    def _no_longer_invited(self, allowed: AllowList) -> list[str]:
        members = [self.room.find(name) for name in self.room.names()]
        gone = [m.name for m in members if m is not None and not allowed.admits(m.fingerprint)]
        if not gone:
            return []
        return [f"Still online, no longer invited (they stay until they leave; /kick to remove): {', '.join(gone)}"]

    def notify_all(self, text: str, by: str = CONSOLE) -> None:
        """A notice from the operator to every member (from an operator's
        client, it names them: ``by`` is ``NAME (SHA256:...)``)."""
        if by != CONSOLE:
            log.info("Notice from %s (%d characters)", _operator(by), len(text))
        name = "" if by == CONSOLE else " " + by.rsplit(" (", 1)[0]
        self.room.publish(Notice(f"Notice from the operator{name}: {text}"))

    # The bans (the console's and the operators' /ban, /unban, /bans).

    def operate(self, session: MemberSession, command: str, argument: str) -> list[str]:
        """An operator's command from their own client (the session checked
        that the key is an operator's): run as the console runs it, in the
        operator's name."""
        name = session.membership.name if session.membership is not None else "?"
        actor = OperatorConsole(self, actor=f"{name} ({session.fingerprint})", actor_key=session.fingerprint)
        return actor.run_operator(command, argument)

    def ban(
        self, target: str, seconds: int | None, reason: str, by: str = CONSOLE, by_key: str | None = None
    ) -> list[str]:
        """Ban ``target``: a fingerprint, an address or network, or a name
        (the key of whoever holds it, online or registered; a guest's
        address). Whoever it covers is disconnected now, and the others get
        one notice for each name. Lines for the operator."""
        reason = " ".join(reason.split())  # one line, as it is shown and stored
        seconds = None if seconds is None else min(seconds, MAX_BAN_SECONDS)  # as the table keeps it
        if len(reason) > MAX_BAN_REASON:
            return [f"A ban's reason may be {MAX_BAN_REASON} characters long at most; no one was banned."]
        found = self._ban_target(target)
        if isinstance(found, list):
            return found
        stored, name = found
        if by_key is not None and stored in (by_key, self._owner(by_key)):
            return ["That is your own key: you would be banned from the server."]
        operators = self.operators_list()
        if operators is not None and operators.admits(stored):
            return [f"{stored} is an operator's key: take it out of the operators file (and /reload) first."]
        ban = self.bans.add(stored, reason, by, seconds, name=name)
        lasting = "for ever" if seconds is None else f"for {format_length(seconds)}"
        label = f"{stored} ({name})" if name and name != stored else stored
        shown = f": {printable_text(reason)}" if reason else ""  # an operator's client may send ESC or BEL
        log.info("%s banned by %s %s%s", label, _operator(by), lasting, shown)
        closed = self._disconnect_banned(ban, seconds)
        told = f"{closed} connection{'s' if closed != 1 else ''} closed"
        return [f"Banned {printable_text(label)} {lasting}{': ' + reason if reason else ''} ({told})."]

    def _ban_target(self, target: str) -> tuple[str, str] | list[str]:
        """(the ban's target, the name it was given by or ""), or the lines
        saying why there is none."""
        stored = parse_target(target)
        if stored is not None:
            return stored, ""
        membership = self.room.find(target)
        if membership is not None:
            if membership.fingerprint is not None:  # a device's name is its owner's: the owner is banned
                return self._owner(membership.fingerprint) or membership.fingerprint, membership.name
            host = getattr(membership.member, "host", "")
            return (parse_target(host) or host, membership.name) if host else ["That guest's address is unknown."]
        held = self.registrations.lookup(target) if self.registrations is not None else None
        if held is not None:
            return held.fingerprint, held.name
        shown = printable_text(target)
        if self.room.cluster.locate(target) is not None:
            return [f"{shown} is on another server of the cluster: ban them there, or ban their key."]
        return [f"No one called {shown} is online, and no key has that name registered."]

    def _disconnect_banned(self, ban: Ban, seconds: int | None) -> int:
        """Close every connection the ban covers (in the room or still
        choosing a name); the count."""
        closed = 0
        for handler in self._handlers_now():
            session = handler.session  # None: still in its handshake, checked when its session starts
            owner = self._owner(session.fingerprint) if session is not None else None
            if session is None or not ban.covers(session.fingerprint, handler.host, owner):
                continue
            session.ban(seconds or 0, ban.reason)  # before the close: its leave is a ban's, whenever it comes
            handler.close(banned_text(ban.reason))
            closed += 1
        return closed

    def _sweep_bans(self) -> None:
        """Read a cluster's bans again every ``ban_sweep`` seconds and close
        the connections here that a ban set on another server covers (that
        server closed its own at once), until the server stops."""
        swept: set[tuple[str, int]] = set()  # (target, set_at): each ban is swept for once
        while not self._shutdown_request.wait(self.ban_sweep):
            try:
                current = self.bans.current()  # one read of Redis a pass
                for ban in current:
                    if (ban.target, ban.set_at) not in swept:  # new: the connections are looked at
                        self._disconnect_banned(ban, self.bans.remaining(ban))
                swept = {(ban.target, ban.set_at) for ban in current}
            except Exception as exc:  # the next pass tries again; the sweep never ends here
                log.warning("The cluster's bans could not be checked: %s", exc)

    def _owner(self, fingerprint: str | None) -> str | None:
        """The owner of the key ``fingerprint`` (itself if not a device),
        None for a guest or with no registrations."""
        if fingerprint is None or self.registrations is None:
            return None
        return self.registrations.owner_of(fingerprint)

    def unban(self, target: str, by: str = CONSOLE) -> list[str]:
        """Lift a ban: by its target, or by the name it was given for or
        that is registered to its key. Lines for the operator."""
        stored = parse_target(target)
        candidates = [stored] if stored is not None else self._bans_named(target)
        lifted = next((ban for ban in map(self.bans.remove, candidates) if ban is not None), None)
        if lifted is None:
            return [f"{printable_text(target)} is not banned."]
        label = f"{lifted.target} ({lifted.name})" if lifted.name else lifted.target
        log.info("%s unbanned by %s", label, _operator(by))
        return [f"Lifted the ban of {printable_text(label)}."]

    def _bans_named(self, name: str) -> list[str]:
        """The targets a name may mean: the bans given by that name (or a
        look-alike), and the key it is registered to."""
        wanted = names.key(name) if len(name) <= 4 * protocol.MAX_USERNAME_LENGTH else None
        named = [ban.target for ban in self.bans.current() if ban.name and names.key(ban.name) == wanted]
        held = self.registrations.lookup(name) if self.registrations is not None and wanted else None
        return named + ([held.fingerprint] if held is not None else [])

    def ban_lines(self) -> list[str]:
        """``/bans``: one line a ban in force, oldest first."""
        current = self.bans.current()
        if not current:
            return ["No one is banned."]
        lines = [f"{len(current)} ban{'s' if len(current) > 1 else ''}:"]
        for ban in current:
            left = self.bans.remaining(ban)
            lasting = "for ever" if left is None else f"{format_length(left)} more"
            because = f": {printable_text(ban.reason)}" if ban.reason else ""
            named = f" {printable_text(ban.name)}" if ban.name else ""
            lines.append(f"  {ban.target}{named} ({lasting}, by {printable_text(ban.by)}){because}")
        return lines

    def _handlers_now(self) -> list[ClientHandler]:
        with self._handlers_lock:
            return list(self._handlers)

    def _accept(self) -> None:
        try:
            # socket.accept() less its Enum conversions of family and type
            # (a tenth of the accepting thread's time per connection): the
            # listener's family is known, and it has no timeout to pass on.
            fd, address = self._listener._accept()  # type: ignore[attr-defined]  # socket.accept calls it too
            sock = socket.socket(self._family, socket.SOCK_STREAM, 0, fileno=fd)
        except OSError as exc:
            # Out of descriptors, most likely: say so, and retry after a pause
            # rather than spinning.
            log.error("accept failed: %s", exc)
            self._shutdown_request.wait(0.1)
            return
        ticket = self.admission.admit(address[0])
        if isinstance(ticket, admission.Refused):
            self._refuse(sock, address, self._refusal_text(ticket), ticket)
            return
        if self._tune_each is None:
            self._tune_each = not transport.is_tuned(sock, keepalive=True)
        if self._tune_each:
            transport.tune(sock, keepalive=True)
        handler = self.handler_class(self, sock, address, ticket)
        thread = threading.Thread(target=handler.handle, name=f"reader {handler.peer}", daemon=True)
        with self._handlers_lock:
            self._handlers[handler] = thread
        log.info("%s: connected", handler.peer)
        thread.start()

    def _refusal_text(self, refused: admission.Refused) -> str:
        if refused.why is admission.Why.FULL:
            return server_full(self.limits.max_clients)
        return REFUSALS[refused.why].format(
            max_per_address=self.limits.max_per_address, retry_after=max(1.0, refused.retry_after)
        )

    def _refuse(
        self, sock: socket.socket, address: tuple[str, int], reason: str, refused: admission.Refused | None = None
    ) -> None:
        """Turn a connection away at once, without a thread or a key: the
        refusal is one small frame that fits any socket buffer. A flood of
        them is logged a line per address and reason every few seconds."""
        count = 1 if refused is None else self._refusals.note(refused)
        if count:
            more = f" ({count} refused since the last line)" if count > 1 else ""
            log.warning("%s: refused: %s%s", transport.format_address(*address[:2]), reason, more)
        try:
            sock.setblocking(False)
            sock.send(protocol.refusal(reason))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # gone already: nothing to tell
        finally:
            sock.close()
