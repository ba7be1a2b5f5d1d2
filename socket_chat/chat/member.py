"""One member's session: the chat's rules for one person, from the username
they choose to the line they part with.

It knows no sockets, as the room does not (ssh-chat's ``chat/``, h11's
connection): protocol events go in through ``receive``, what the person is
to be told comes out through ``tell``, and time is an injected clock's.
The server's handler reads the socket, keeps the deadlines and feeds it.

What the person may send depends on the stage, as a table
(``RULES[stage][event type]``); an event with no row gets the stage's
answer for the unexpected. Every request after the handshake is charged to
flood control, so that none is free to repeat.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from socket_chat import crypto, protocol
from socket_chat.chat import blocks, names
from socket_chat.chat.allow import INVITED_ONLY, NAME_RESERVED, AllowList
from socket_chat.chat.bans import Bans, banned_text
from socket_chat.chat.history import HistoryUnavailable
from socket_chat.chat.limits import Clock, Limits, TokenBucket
from socket_chat.chat.offline import OfflineMessages, OfflineUnavailable
from socket_chat.chat.presentation import excerpt, printable_text
from socket_chat.chat.registrations import MAX_DEVICES, DeviceAdded, NameRegistry, RegistryUnavailable, Taken
from socket_chat.chat.room import Member, Membership, Room, user_list_messages
from socket_chat.chat.rooms import RoomRefused, Rooms
from socket_chat.chat.search import (
    MAX_SEARCH_RESULTS,
    NO_INDEX,
    SearchIndex,
    SearchRefused,
    SearchUnavailable,
    query_of,
)

__all__ = [
    "ASK_USERNAME",
    "MAX_LINE_ID",
    "GUESTS_REFUSED",
    "KEY_UNSUPPORTED",
    "PROOF_FAILED",
    "PROOF_TWICE",
    "MAX_AWAY_LENGTH",
    "MAX_USERNAME_ATTEMPTS",
    "NOT_AN_OPERATOR",
    "OPERATOR_COMMAND_NAMES",
    "TOO_MANY_USERNAMES",
    "USERNAME_INVALID",
    "USERNAME_LOOKS_TAKEN",
    "USERNAME_TAKEN",
    "NAME_AT_CAP",
    "KEPT_FOR_LATER",
    "NOT_KEPT_FOR_GUESTS",
    "WAITING_FULL",
    "WAITING_UNAVAILABLE",
    "UNKNOWN_KEY",
    "WHOIS_NO_ONE",
    "DEVICE_ADDED",
    "DEVICE_REMOVED",
    "NAMES_UNCHECKED",
    "HISTORY_UNAVAILABLE",
    "MENTIONS_NEED_A_KEY",
    "MENTIONS_FIRST_VISIT",
    "STILL_AWAY",
    "NO_ROOMS_HERE",
    "ROOMS_NOT_ASKED",
    "MemberSession",
    "Stage",
    "line_id_of",
    "recipient_name",
]

ASK_USERNAME = "Please enter a username."
WHOIS_NO_ONE = "No one called {name} is online, and no key has that name registered."
HISTORY_UNAVAILABLE = "The history cannot be read just now; try again in a moment."
MENTIONS_NEED_A_KEY = "/mentions needs a key: you are a guest here, so the server cannot tell when you were last here."
MENTIONS_FIRST_VISIT = "No mentions to show: the server has no record of this key leaving before."
STILL_AWAY = "You are still marked as away: {message} (/back to come back)."
#: A WhoisReply's fingerprint for a member on another server of the cluster.
UNKNOWN_KEY = "unknown"
NAME_AT_CAP = (
    "The name {name} is yours while you are online, but it is not registered: your key holds {cap} names "
    "already, the most it may."
)
USERNAME_TAKEN = "That username is taken. Please enter another username."
#: The registered names cannot be read (a cluster's Redis is lost).
NAMES_UNCHECKED = (
    "Who that username belongs to cannot be checked now (this server has lost touch with the cluster); "
    "try again in a moment."
)
DEVICE_ADDED = "The key {device} may use your names now; the names it takes are yours too."
DEVICE_REMOVED = (
    "The key {device} may no longer use your names from its next connection (if it is online, it stays so)."
)
#: Why /device add did nothing, by DeviceAdded.
DEVICE_REFUSED = {
    DeviceAdded.ALREADY: "The key {device} is one of your devices already.",
    DeviceAdded.SELF: "That is this client's own key: it holds your names already.",
    DeviceAdded.NOT_OWNER: "Only the key that holds your names adds devices; this client's key is a device of {owner}.",
    DeviceAdded.NO_NAMES: "Your key holds no registered name: take one first, then add devices to it.",
    DeviceAdded.OTHERS: "The key {device} is a device of someone else.",
    DeviceAdded.HAS_DEVICES: "The key {device} has devices of its own; a device cannot have devices.",
    DeviceAdded.TOO_MANY: f"You have {MAX_DEVICES} devices already, the most a person may: remove one first.",
}
DEVICES_NEED_KEY = "Only a person with a key has devices; this client offered none (you are a guest)."
NO_DEVICES_HERE = "This server registers no names, so there are no devices either."
#: ``reason``: a ``names.NameRefused`` reason, "mixes Cyrillic and Latin letters".
USERNAME_INVALID = "That is not a valid username: it {reason}. Please enter another username."
USERNAME_LOOKS_TAKEN = "That username looks the same as {holder}, who is online. Please enter another username."
#: Username attempts one connection may make before it is closed (each may
#: be a Redis call in a cluster).
MAX_USERNAME_ATTEMPTS = 10
TOO_MANY_USERNAMES = f"Too many username attempts ({MAX_USERNAME_ATTEMPTS})."
MAX_LINE_ID = 2**63 - 1  # SQLite's largest integer: no line has a greater ID
MAX_AWAY_LENGTH = 200  # characters of an away message (IRC servers allow about as many)
# The key proof (PROTOCOL.md, "Key proof"): each failure ends the session.
PROOF_FAILED = "Your key's proof does not check out; the connection is closed."
KEY_UNSUPPORTED = "Your key cannot be used here: {reason}; the connection is closed."
PROOF_TWICE = "A key proof is taken once, before the username; the connection is closed."
#: The sender's answer when a private line is kept for someone offline
#: (chat.offline); no pronoun: the server does not know one.
KEPT_FOR_LATER = "{name} is offline; they will get it when they come back."
NOT_KEPT_FOR_GUESTS = (
    "No one called {name} is online; the private message was not sent. Private messages are kept for "
    "later only for a name registered to a key (not a guest's)."
)
WAITING_FULL = "{name} is offline and has {cap} private messages waiting already, the most kept: this one was not sent."
WAITING_UNAVAILABLE = (
    "{name} is offline, and private messages cannot be kept for later just now: "
    "this one was not sent. Try again in a moment."
)
GUESTS_REFUSED = (
    "This server takes only people with a key, and your client offered none: connect with a newer "
    "client (it makes a key and proves it by itself), or ask the server's operator."
)

#: A room request on a server with no rooms (in a cluster, for now).
NO_ROOMS_HERE = "This server has no rooms (its cluster does not share them): you are in the lobby."
#: A room request from a client that did not take the server's offer (``Rooms``).
ROOMS_NOT_ASKED = "Rooms are sent only to a client that asked for them (Rooms, PROTOCOL.md): you are in the lobby."

#: An operator's command sent by someone who is not one (``command``: ``ban``).
NOT_AN_OPERATOR = "Only the server's operators may use /{command}; nothing was done."
#: What an OperatorCommand may name (PROTOCOL.md, "Operators and bans").
OPERATOR_COMMAND_NAMES = frozenset({"kick", "ban", "unban", "bans", "release", "say", "close"})

#: The chat's log: joins, renames and relays (the server's log, too).
log = logging.getLogger("chat.server")


class Stage(enum.Enum):
    """Where a session is; only ``receive`` moves it on."""

    NAMING = "naming"  #: asked for a username, none accepted yet
    CHATTING = "chatting"  #: in the room
    ENDED = "ended"  #: left or turned away: nothing more is received


class MemberSession:
    """The rules for one person: which username they get, what they say to
    whom, and how often.

    Args:
        room: the chat to join.
        member: what the room delivers to (the connection).
        limits: the server's; only the message size and flood control apply.
        tell: queues a message for this person alone.
        peer: the connection's address, for the log.
        log_messages: log the text of public lines (else their length).
        clock: monotonic time, for flood control.
        allowed: the server's allow list now (``--allow``), or None: anyone
            may join. A key not on it, or a guest, is turned away
            (``INVITED_ONLY``) at its proof or its first ``Username``,
            before any name is taken and before anything of the chat is
            told; a name it reserves is taken by its key alone.
        registrations: the server's registered names (registrations.py),
            or None: names belong to no one once their holder leaves.
        offline: where private lines wait for a registered name's key
            while no one is online under it (offline.py), or None: none
            are kept.
        search: the history's full-text index (``/search``), or None: the
            server keeps no store, and a search is refused (``NO_INDEX``).
        bans: the server's bans (bans.py), or None: no one is banned. A
            banned key is turned away right after its proof, a guest from
            a banned address at its first ``Username``: before any name.
        host: the connection's address alone (no port), for the bans.
        operators: the operators list now (``--operators``), or None: no
            operator but the console.
        operate: runs an operator's command for this session (the server's
            ``operate``: the session, the command, its argument), returning
            the lines to tell; None: no such commands here.
        rooms: the rooms besides the lobby (rooms.py), offered (``Rooms``)
            and served to a client that takes the offer; None: none here.
        tickets: makes the resumption ticket asked for (``TicketRequest``)
            for the key proved so far (None: a guest); None: this server
            gives none (it answers ``NewTicket(0, b"")``).

    Attributes:
        membership: the place in the room, from the username accepted
            until ``leave``.
        goodbye: once ENDED, the reason to give the person, or None if they
            left of their own accord.
        parting: the line the person left with, if it passed the checks.
        fingerprint: the person's key (``SHA256:...``) once its proof
            checked out, or None: a guest.
    """

    def __init__(
        self,
        room: Room,
        member: Member,
        limits: Limits,
        tell: Callable[[protocol.Message], None],
        peer: str = "",
        log_messages: bool = False,
        clock: Clock = time.monotonic,
        allowed: Callable[[], AllowList | None] | None = None,
        registrations: NameRegistry | None = None,
        offline: OfflineMessages | None = None,
        search: SearchIndex | None = None,
        bans: Bans | None = None,
        host: str = "",
        operators: Callable[[], AllowList | None] | None = None,
        operate: Callable[[MemberSession, str, str], list[str]] | None = None,
        tickets: Callable[[str | None], protocol.NewTicket] | None = None,
        rooms: Rooms | None = None,
    ) -> None:
        self.room, self.member, self.limits = room, member, limits
        self._tell = tell
        self.peer = peer
        self.log_messages = log_messages
        self.flood_control = TokenBucket(limits.rate, limits.burst, clock)
        self.membership: Membership | None = None
        self.goodbye: str | None = None
        self.parting = ""
        self._stage = Stage.NAMING
        self._attempts = 0
        self._echo = False  # the person asked for their own lines back (EchoOwnLines)
        self._stamps = False  # the person asked for message IDs and times (Stamps)
        self._multiline = False  # the person takes blocks whole (Multiline)
        self.fingerprint: str | None = None
        self._session_id: bytes | None = None  # given to start(): proofs are taken
        self._allowed = allowed or _anyone
        self._registrations = registrations
        self._offline, self._search = offline, search
        self._bans, self.host = bans, host
        self._operators = operators or _anyone
        self._operate_with = operate
        self._told_operator = False  # the last OperatorStatus said 1
        self._operator_lock = threading.Lock()  # recheck_operator: the reader and a reload's thread
        self._tickets = tickets
        self._ticket_given = False
        self._rooms = rooms
        self._in_rooms = False  # the person took the offer of rooms (Rooms)
        #: (seconds, reason) of the ban that closes this session (``ban``), told when it leaves.
        self._banned: tuple[int, str] | None = None

    @property
    def stage(self) -> Stage:
        return self._stage

    def start(self, session_id: bytes | None = None, resumed_key: str | None = None) -> None:
        """The first words: the flood limit, the username deadline, that a
        key proof is taken (if ``session_id``, the connection's, is given:
        what a proof must sign), the question. ``resumed_key``: the key the
        person proved on the connection whose ticket this one resumed by;
        it stands as proved, and no proof is asked for."""
        self._tell(self.limits.rate_limit_message())
        self._tell(protocol.UsernameDeadline(min(math.ceil(self.limits.username_timeout), 0xFFFFFFFF)))
        if resumed_key:
            self._session_id = session_id
            self.fingerprint = resumed_key
            log.info("%s: resumed with the key %s", self.peer, resumed_key)
            if not self._admitted():  # as a proof is checked: a ticket outlives a ban or a reload
                return
        elif session_id is not None:
            self._session_id = session_id
            self._tell(protocol.ProofRequest())
        self._tell(protocol.Stamps())
        self._tell(protocol.MultilineOffer(self.limits.max_lines))
        if self._rooms is not None:
            self._tell(protocol.Rooms())
        self._tell(protocol.UsernameRequest(ASK_USERNAME))

    def receive(self, event: protocol.Event) -> None:
        """Act on one event from the person: what they are to be told goes
        to ``tell``, what the others are to hear to the room; the stage may
        move on.

        Raises:
            RuntimeError: the session has ended (a bug in the caller).
        """
        if self._stage is Stage.ENDED:
            raise RuntimeError(f"{type(event).__name__} received after the session ended")
        rule = RULES[self._stage].get(type(event), UNEXPECTED[self._stage])
        rule(self, event)

    def leave(self) -> None:
        """Leave the room, if in it, with the parting line if there is one
        (or the ban's notice, if ``ban`` closed it); the end of the session
        whatever ended the connection. Idempotent."""
        self._stage = Stage.ENDED
        membership, self.membership = self.membership, None
        if membership is not None:
            if self._rooms is not None:
                self._rooms.leave_all(membership)
            banned = self._banned
            notice = None if banned is None else protocol.UserBanned(membership.name, *banned)
            self.room.leave(membership, self.parting, banned=notice)
            log.info("%s left", membership.name)

    def ban(self, seconds: int, reason: str) -> None:
        """A ban covers this person (called from another thread, before the
        connection is closed): out of the room now, the others told with the
        ban's notice (``UserBanned``). A person welcomed whose session has
        not yet taken its place (``membership`` is set just after the room's
        join returns, in the reader's thread) leaves with that notice when
        the session ends, so that the ban is never told as a mere leave."""
        self._banned = (seconds, reason)
        membership = self.membership
        if membership is not None:
            self.room.leave(membership, banned=protocol.UserBanned(membership.name, seconds, reason))

    # Any stage.

    def _left(self, event: protocol.Goodbye | protocol.ConnectionClosed) -> None:
        self._stage = Stage.ENDED

    def _not_understood(self, event: protocol.MalformedMessage) -> None:
        if self._within_rate("it was not answered"):  # reading it cost as much as a line
            self._tell(protocol.ErrorNotice(f"Message not understood: {event.reason}."))

    def _echo_on(self, event: protocol.EchoOwnLines) -> None:
        self._echo = True
        self._tell(event)  # the answer: from now on

    def _stamps_on(self, event: protocol.Stamps) -> None:
        """Lines with their IDs and times from now on (no answer: the
        server offered them). Before the username, the history too."""
        self._stamps = True

    def _multiline_on(self, event: protocol.Multiline) -> None:
        """Blocks whole from now on (no answer: the server offered them);
        before the username, in the history too."""
        self._multiline = True
        if self.membership is not None:
            self.membership.multiline = True

    def _tell_line(self, message: protocol.Message) -> None:
        """Tell a line of the history or of a search: a block whole, or, to
        a client that did not take blocks, one message a line."""
        for piece in [message] if self._multiline else blocks.pieces(message):
            self._tell(piece)

    def _rooms_on(self, event: protocol.Rooms) -> None:
        """Rooms from now on (no answer: the server offered them)."""
        self._in_rooms = self._rooms is not None

    def _give_ticket(self, event: protocol.TicketRequest) -> None:
        if self._ticket_given:
            if self._within_rate("it was not answered"):
                self._tell(protocol.ErrorNotice("A resumption ticket is given once per connection."))
            return
        if self._stage is Stage.NAMING and not self._admitted():  # no ticket for whom the name would refuse
            return
        self._ticket_given = True
        self._tell(self._tickets(self.fingerprint) if self._tickets is not None else protocol.NewTicket(0, b""))

    # NAMING.

    def _prove(self, event: protocol.KeyProof) -> None:
        """The person's key proof (once, before the username): who they are
        from now on, or the end of the session."""
        if self._session_id is None:  # no proof was asked for
            self._choose_first(event)
            return
        if self.fingerprint is not None:  # a proof that failed ended the session
            self._end(PROOF_TWICE)
            return
        try:
            self.fingerprint = crypto.verify_proof(event.key_type, event.public_key, event.signature, self._session_id)
        except crypto.UnsupportedKeyError as exc:
            self._end(KEY_UNSUPPORTED.format(reason=exc))
        except crypto.ProofFailedError:
            self._end(PROOF_FAILED)
        else:
            log.info("%s: proved the key %s", self.peer, self.fingerprint)
            allowed = self._allowed()
            if allowed is not None and not allowed.admits(self.fingerprint):
                log.warning("%s: refused the key %s: it is not in the allow file", self.peer, self.fingerprint)
                self.fingerprint = None
                self._end(INVITED_ONLY)
            else:
                self._turn_away_if_banned()

    @property
    def is_operator(self) -> bool:
        """Whether the person's proved key is in the operators file now
        (a guest never is)."""
        operators = self._operators()
        return operators is not None and operators.admits(self.fingerprint)

    def _turn_away_if_banned(self) -> bool:
        """End the session if a ban holds against it (its key, or a
        guest's address); an operator's key is never refused. True if so."""
        if self._bans is None or self.is_operator:
            return False
        owner = None
        if self.fingerprint is not None and self._registrations is not None:
            owner = self._registrations.owner_of(self.fingerprint)  # a device of a banned owner is banned
        ban = self._bans.find(self.fingerprint, self.host, owner)
        if ban is None:
            return False
        who = "the key " + self.fingerprint if self.fingerprint else "a guest (no key)"
        log.warning("%s: refused %s: banned (%s)", self.peer, who, ban.target)
        self._end(banned_text(ban.reason))
        return True

    def recheck_operator(self) -> None:
        """Tell a member in the room if a reload made them an operator or
        took it away (from any thread: ``tell`` only queues)."""
        if self.membership is None:
            return
        with self._operator_lock:  # a status told once a change, even from two threads at once
            now = self.is_operator
            if now != self._told_operator:
                self._told_operator = now
                self._tell(protocol.OperatorStatus(int(now)))

    def _end(self, goodbye: str) -> None:
        self.goodbye = goodbye
        self._stage = Stage.ENDED

    def _admitted(self) -> bool:
        """Whether the allow list and the bans let this connection in now;
        if not, the session ends with the line that says why."""
        allowed = self._allowed()
        if allowed is not None and not allowed.admits(self.fingerprint):  # a guest, or a key a reload took out
            who = "the key " + self.fingerprint if self.fingerprint else "a guest (no key)"
            log.warning("%s: refused %s: this server admits only invited people", self.peer, who)
            self._end(INVITED_ONLY)
            return False
        return not self._turn_away_if_banned()

    def _choose(self, event: protocol.Username) -> None:
        if not self._admitted():
            return
        if self.fingerprint is None and not self.limits.guests:
            self._end(GUESTS_REFUSED)
            return
        # Capped: in a cluster each attempt may be a Redis call.
        self._attempts += 1
        last = self._attempts >= MAX_USERNAME_ATTEMPTS
        self.membership = self._try_username(event.name, ask_again=not last)
        if self.membership is not None:
            self._stage = Stage.CHATTING
            self.recheck_operator()  # an operator is told so, after the Greeting
            self._give_waiting()
        elif last:
            self._end(TOO_MANY_USERNAMES)

    def _try_username(self, requested: str, ask_again: bool) -> Membership | None:
        try:
            name = names.accept(requested)
        except names.NameRefused as refused:
            if ask_again:
                self._tell(protocol.UsernameRequest(USERNAME_INVALID.format(reason=refused.reason)))
            return None
        try:
            usable = self._may_use(name)
        except RegistryUnavailable:
            if ask_again:
                self._tell(protocol.UsernameRequest(NAMES_UNCHECKED))
            return None
        if not usable:
            if ask_again:
                self._tell(protocol.UsernameRequest(f"{NAME_RESERVED} Please enter another username."))
            return None
        membership = self.room.join(self.member, name, self.fingerprint, stamps=self._stamps, multiline=self._multiline)
        if membership is None:
            if ask_again:
                holder = self._look_alike_holder(name)
                self._tell(
                    protocol.UsernameRequest(USERNAME_LOOKS_TAKEN.format(holder=holder) if holder else USERNAME_TAKEN)
                )
        else:
            log.info("%s joined from %s", name, self.peer)
            self._register(name)
            self._still_away(membership)
        return membership

    def _still_away(self, membership: Membership) -> None:
        """A person with a key who was away when they last left (or the
        server stopped) is still away, and told so."""
        message = self.room.kept_away(membership)
        if message is not None:
            self.room.set_away(membership, message)
            self._tell(protocol.Notice(STILL_AWAY.format(message=message or "(no message)")))

    def _choose_first(self, event: protocol.Event) -> None:
        if self._within_rate("it was not answered"):
            self._tell(protocol.ErrorNotice("Choose a username first."))

    # CHATTING.

    def _relay(self, line: protocol.ChatLine) -> None:
        """A chat line, or a block of several (refused whole, never cut,
        past ``max_lines``; charged one token a line)."""
        refused = blocks.too_many_lines(line.text, self.limits.max_lines)
        if refused is not None:
            self._refuse_block(refused)
            return
        self._relay_public(
            protocol.ChatMessage(self._me.name, line.text),
            "%s: %s",
            "%s said a line (%d characters)",
            blocks.cost(line),
        )

    def _refuse_block(self, refused: str) -> None:
        """A block past ``max_lines``, refused: charged one token first, so
        that sending such blocks is not a free way to make the server work."""
        if self._within_rate("it was not sent"):
            self._tell(protocol.ErrorNotice(refused))

    def _relay_action(self, line: protocol.ActionLine) -> None:
        self._relay_public(
            protocol.ActionMessage(self._me.name, line.text), "* %s %s", "%s did an action (%d characters)"
        )

    def _relay_public(
        self, message: protocol.ChatMessage | protocol.ActionMessage, said: str, counted: str, cost: int = 1
    ) -> None:
        """A line or action to everyone, if admitted (``cost``: its tokens);
        its text is logged only with ``log_messages`` (``said``), else its
        length (``counted``)."""
        if not self._admit(message.text, cost):
            return
        me = self._me
        if self.log_messages:
            log.info(said, me.name, printable_text(message.text))
        else:
            log.info(counted, me.name, len(message.text))
        self._come_back()
        # Without me, unless I asked for my lines back: then my copy comes
        # in the room's order.
        self.room.publish(message, sender=None if self._echo else me)

    def _relay_private(self, line: protocol.PrivateLine) -> None:
        if not self._admit(line.text):
            return
        me = self._me
        recipient = recipient_name(line.recipient)
        if recipient is None or not self.room.send_private(me, recipient, line.text):
            self._keep_for_later(line, recipient)
            return
        # The text of private lines stays out of the log (the operator could
        # still read it: the server decrypts everything).
        log.info("%s sent a private message to %s", me.name, printable_text(line.recipient))
        away = self.room.away_message(recipient)
        if away is not None and away[0] != me.name:
            self._tell(protocol.AwayReply(*away))  # as IRC's RPL_AWAY

    def _keep_for_later(self, line: protocol.PrivateLine, recipient: str | None) -> None:
        """A private line to a name no one is online under: kept for the
        key that registered it, or refused (a guest's name, no name)."""
        shown = excerpt(line.recipient, 40)
        if recipient is None or self._offline is None:  # no name, or no registrations (app.py)
            self._tell(protocol.ErrorNotice(f"No one called {shown} is online; the private message was not sent."))
            return
        held = self._registrations.lookup(recipient) if self._registrations else None
        if held is None:
            self._tell(protocol.ErrorNotice(NOT_KEPT_FOR_GUESTS.format(name=shown)))
        else:
            self._keep_waiting(held.fingerprint, held.name, line.text)

    def _keep_waiting(self, fingerprint: str, name: str, text: str) -> None:
        """Keep a private line for ``name``'s key, and tell the sender what became of it."""
        assert self._offline is not None
        try:
            kept = self._offline.keep(fingerprint, self._me.name, name, text)
        except OfflineUnavailable:
            self._tell(protocol.ErrorNotice(WAITING_UNAVAILABLE.format(name=name)))
            return
        if not kept:
            self._tell(protocol.ErrorNotice(WAITING_FULL.format(name=name, cap=self._offline.cap)))
        else:
            log.info("%s left a private message for %s (offline)", self._me.name, name)
            self._tell(protocol.Notice(KEPT_FOR_LATER.format(name=name)))

    def _give_waiting(self) -> None:
        """The private lines kept for this key while it was offline, after
        the welcome (and the history), oldest first; forgotten once given.
        They wait under the owner's key: a device takes its owner's."""
        if self._offline is None or self.fingerprint is None:
            return
        waiting = self._offline.take(self._owner_or_own())
        if not waiting:
            return
        count = len(waiting)
        self._tell(protocol.Notice(f"{count} private message{'s' if count > 1 else ''} came while you were away:"))
        for kept in waiting:
            self._tell(protocol.OfflineMessage(kept.sender, kept.recipient, kept.text, kept.sent_at))

    def _owner_or_own(self) -> str:
        """The key whose names this one uses (its owner's, for a device);
        its own if that cannot be asked now."""
        assert self.fingerprint is not None
        try:
            return self.fingerprint if self._registrations is None else self._registrations.owner_of(self.fingerprint)
        except RegistryUnavailable:
            return self.fingerprint

    def _search_history(self, request: protocol.SearchRequest) -> None:
        """``/search``: the newest matching public lines, newest first, after
        a line that says how many (at most ``MAX_SEARCH_RESULTS``)."""
        if not self._within_rate("nothing was searched"):
            return
        if self._search is None:
            self._tell(protocol.ErrorNotice(NO_INDEX))
            return
        try:
            found = self._search.search(query_of(request), MAX_SEARCH_RESULTS + 1)
        except SearchRefused as refused:
            self._tell(protocol.ErrorNotice(f"Not searched: {refused}."))
            return
        except SearchUnavailable as failed:
            self._tell(protocol.ErrorNotice(str(failed)))
            return
        shown = found[:MAX_SEARCH_RESULTS]
        if not shown:
            self._tell(protocol.Notice("No line matches."))
            return
        if len(found) > MAX_SEARCH_RESULTS:
            head = (
                f"The newest {len(shown)} lines that match (the most shown at once; narrow the search for older ones):"
            )
        else:
            head = (
                f"{len(shown)} line{'s' if len(shown) > 1 else ''} match{'' if len(shown) > 1 else 'es'}, newest first:"
            )
        self._tell(protocol.Notice(head))
        for entry in shown:
            self._tell_line(protocol.SearchResult(entry.sender, entry.text, entry.sent_at, entry.kind))

    def _rename(self, request: protocol.NickRequest) -> None:
        if not self._within_rate("the name was not changed"):
            return
        try:
            name = names.accept(request.name)
        except names.NameRefused as refused:
            self._tell(
                protocol.ErrorNotice(f"That is not a valid username: it {refused.reason}. The name was not changed.")
            )
            return
        try:
            usable = name == self._me.name or self._may_use(name)
        except RegistryUnavailable:
            self._tell(protocol.ErrorNotice(f"{NAMES_UNCHECKED} The name was not changed."))
            return
        if name == self._me.name:
            self._tell(protocol.Notice(f"You are already called {name}."))  # nobody else is told
        elif not usable:
            self._tell(protocol.ErrorNotice(f"The username {name} belongs to someone else."))
        elif self.room.rename(self._me, name):
            log.info("%s: now known as %s", self.peer, name)
            if self._rooms is not None:
                self._rooms.renamed(self._me)
            self._register(name)
        elif holder := self._look_alike_holder(name):
            self._tell(protocol.ErrorNotice(f"The username {name} looks the same as {holder}, who is online."))
        else:
            self._tell(protocol.ErrorNotice(f"The username {name} is taken."))

    def _list_users(self, request: protocol.UserListRequest) -> None:
        # Counted by flood control like every request: building the list
        # costs (a Redis SCAN in a cluster). The client's own request on
        # joining comes with a full bucket.
        if not self._within_rate("the user list was not sent"):
            return
        for message in user_list_messages(self.room.who(), self.room.away_messages(), self.room.guests()):
            self._tell(message)

    def _whois(self, request: protocol.WhoisRequest) -> None:
        """``/whois NAME``: who is online under the name, or whose key it is."""
        if not self._within_rate("it was not answered"):
            return
        wanted = recipient_name(request.name)  # None: no name at all, nobody is looked up
        here = None if wanted is None else self.room.find(wanted)
        holder = here.name if here is not None else self.room.cluster.locate(wanted) if wanted else None
        held = self._registrations.lookup(wanted) if wanted and self._registrations else None
        if holder is None and held is None:
            self._tell(protocol.ErrorNotice(WHOIS_NO_ONE.format(name=excerpt(request.name, 40))))
            return
        if holder is None:
            assert held is not None
            self._tell(protocol.WhoisReply(held.name, "offline", 0, held.fingerprint, held.registered_at, ""))
            return
        if here is not None:
            fingerprint = here.fingerprint or ""
        else:  # on another server of the cluster: its name hash has the key
            found = self.room.cluster.fingerprint_of(holder)
            fingerprint = UNKNOWN_KEY if found is None else found
        away = self.room.away_message(holder)
        self._tell(
            protocol.WhoisReply(
                holder,
                "online" if away is None else "away",
                min(dict(self.room.who()).get(holder, 0), 0xFFFFFFFF),
                fingerprint,
                held.registered_at if held is not None and self._holds(held.fingerprint, fingerprint) else 0,
                "" if away is None else away[1],
            )
        )

    def _holds(self, owner: str, fingerprint: str) -> bool:
        """Whether the key ``fingerprint`` uses the names of ``owner``: it is
        that key, or one of its devices."""
        if fingerprint in ("", UNKNOWN_KEY):
            return False
        if owner == fingerprint:
            return True
        try:
            return self._registrations is not None and self._registrations.owner_of(fingerprint) == owner
        except RegistryUnavailable:
            return False

    # Devices (registrations.py: only an owner adds and removes them).

    def _device_add(self, request: protocol.DeviceAdd) -> None:
        device = self._device_request(request.key, "no device was added")
        if device is None:
            return
        assert self._registrations is not None and self.fingerprint is not None
        try:
            added = self._registrations.add_device(self.fingerprint, device)
            owner = self._registrations.owner_of(self.fingerprint)
        except RegistryUnavailable:
            self._tell(protocol.ErrorNotice(f"{NAMES_UNCHECKED} No device was added."))
            return
        if added is DeviceAdded.ADDED:
            log.info("%s: %s added the device %s", self.peer, self.fingerprint, device)
            self._tell(protocol.Notice(DEVICE_ADDED.format(device=device)))
        elif added is DeviceAdded.ALREADY:
            self._tell(protocol.Notice(DEVICE_REFUSED[added].format(device=device, owner=owner)))
        else:
            self._tell(protocol.ErrorNotice(DEVICE_REFUSED[added].format(device=device, owner=owner)))

    def _device_remove(self, request: protocol.DeviceRemove) -> None:
        device = self._device_request(request.key, "no device was removed")
        if device is None:
            return
        assert self._registrations is not None and self.fingerprint is not None
        try:
            removed = self._registrations.remove_device(self.fingerprint, device)
        except RegistryUnavailable:
            self._tell(protocol.ErrorNotice(f"{NAMES_UNCHECKED} No device was removed."))
            return
        if removed:
            log.info("%s: %s removed the device %s", self.peer, self.fingerprint, device)
            self._tell(protocol.Notice(DEVICE_REMOVED.format(device=device)))
        else:
            self._tell(
                protocol.ErrorNotice(f"The key {device} is not one of your devices (only their owner removes them).")
            )

    def _device_list(self, request: protocol.DeviceListRequest) -> None:
        if not self._devices_possible():
            return
        assert self._registrations is not None and self.fingerprint is not None
        try:
            owner = self._registrations.owner_of(self.fingerprint)
            devices = self._registrations.devices_of(owner)
        except RegistryUnavailable:
            self._tell(protocol.ErrorNotice(f"{NAMES_UNCHECKED} The devices were not listed."))
            return
        self._tell(protocol.DeviceList.of(owner, [(d.fingerprint, d.added_at) for d in devices]))

    def _device_request(self, text: str, refused: str) -> str | None:
        """The fingerprint a /device add or remove names, or None (told why)."""
        if not self._devices_possible():
            return None
        try:
            return device_fingerprint(text)
        except ValueError as exc:
            self._tell(protocol.ErrorNotice(f"{exc}; {refused}."))
            return None

    def _devices_possible(self) -> bool:
        """Flood control, a key, a server that registers names (each told)."""
        if not self._within_rate("it was not answered"):
            return False
        if self.fingerprint is None:
            self._tell(protocol.ErrorNotice(DEVICES_NEED_KEY))
            return False
        if self._registrations is None:
            self._tell(protocol.ErrorNotice(NO_DEVICES_HERE))
            return False
        return True

    def _operate(self, request: protocol.OperatorCommand) -> None:
        """An operator's command from their own client: run by the server
        (``operate``) if the person's key is an operator's now, else refused."""
        if not self._within_rate("nothing was done"):
            return
        command = request.command.lower()
        if command not in OPERATOR_COMMAND_NAMES:
            self._tell(protocol.ErrorNotice(f"There is no operator command /{excerpt(request.command, 20)}."))
            return
        if not self.is_operator or self._operate_with is None:
            who = self.fingerprint or "a guest (no key)"
            log.warning("%s (%s): refused /%s: not an operator", self._me.name, who, command)
            self._tell(protocol.ErrorNotice(NOT_AN_OPERATOR.format(command=command)))
            return
        for line in self._operate_with(self, command, request.argument):
            self._tell(protocol.Notice(line))

    def _set_away(self, request: protocol.Away) -> None:
        """``/away [MESSAGE]``: shown in /users, and to whoever writes to
        the member privately, until /back or their next line to everyone."""
        if not self._within_rate("you were not marked as away"):
            return
        message = " ".join(request.message.split())  # one line: no tab or newline in a UserList entry
        if len(message) > MAX_AWAY_LENGTH:
            self._tell(
                protocol.ErrorNotice(
                    f"An away message may be {MAX_AWAY_LENGTH} characters long at most; you were not marked as away."
                )
            )
            return
        self.room.set_away(self._me, message)
        self._tell(protocol.Notice(f"You are marked as away: {message}" if message else "You are marked as away."))

    def _back(self, request: protocol.Back) -> None:
        if not self._within_rate("you are still marked as away"):
            return
        if self._me.away is None:
            self._tell(protocol.Notice("You are not marked as away."))
        else:
            self._come_back()

    def _come_back(self) -> None:
        """No longer away (after /back, or a line to everyone)."""
        if self._me.away is not None:
            self.room.set_away(self._me, None)
            self._tell(protocol.Notice("You are back: no longer marked as away."))

    def _history(self, request: protocol.HistoryRequest) -> None:
        """``/history [N]``: N lines before the line ``before`` (the oldest
        the person was shown), oldest first, then a ``PageEnd``."""
        if not self._within_rate("the history was not sent"):
            return
        count = min(request.count or protocol.HISTORY_PAGE, protocol.MAX_HISTORY_PAGE)
        before = request.before.strip()
        line_id = line_id_of(before) if before else None
        if before and line_id is None:
            self._tell(protocol.ErrorNotice(f"No line has the ID {excerpt(before, 24)}."))
            return
        try:
            lines, more = self.room.page(line_id, count)
        except HistoryUnavailable:
            self._tell(protocol.ErrorNotice(HISTORY_UNAVAILABLE))
            return
        for line in lines:
            self._tell_line(line.stamped())
        self._tell(protocol.PageEnd("history", len(lines), int(more)))

    def _mentions(self, request: protocol.MentionsRequest) -> None:
        """``/mentions``: the lines that mentioned the person while away
        (between their last leaving and this join), newest first."""
        if not self._within_rate("the mentions were not sent"):
            return
        if self._me.fingerprint is None:
            self._tell(protocol.ErrorNotice(MENTIONS_NEED_A_KEY))
            return
        try:
            lines = self.room.missed_mentions(self._me)
        except HistoryUnavailable:
            self._tell(protocol.ErrorNotice(HISTORY_UNAVAILABLE))
            return
        if lines is None:
            self._tell(protocol.Notice(MENTIONS_FIRST_VISIT))
            return
        for line in lines:
            self._tell_line(line.stamped())
        self._tell(protocol.PageEnd("mentions", len(lines), 0))

    def _room_request(self, request: protocol.RoomRequest) -> None:
        """``/join``, ``/part``, ``/rooms``, ``/topic``, ``/who``, ``/mode``,
        ``/invite``: done by the rooms, or refused with the reason."""
        if not self._within_rate("nothing was done") or not self._rooms_served():
            return
        assert self._rooms is not None
        command, room, argument = request.command.lower(), request.room.strip(), request.argument
        try:
            if command == "join":
                self._rooms.join(self._me, room)
                log.info("%s joined %s", self._me.name, printable_text(excerpt(room, 40)))
            elif command == "part":
                self._rooms.part(self._me, room, printable_text(excerpt(" ".join(argument.split()), 200)))
            elif command == "rooms":
                for message in self._rooms.listing():
                    self._tell(message)
            elif command == "topic":
                self._rooms.set_topic(self._me, room, argument)
            elif command == "who":
                for message in self._rooms.who(self._me, room):
                    self._tell(message)
            elif command == "mode":
                self._rooms.set_mode(self._me, room, argument.strip())
            elif command == "invite":
                self._tell(protocol.Notice(self._rooms.invite(self._me, room, argument)))
            else:
                self._tell(protocol.ErrorNotice(f"There is no room command /{excerpt(request.command, 20)}."))
        except RoomRefused as refused:
            self._tell(protocol.ErrorNotice(str(refused)))

    def _room_line(self, line: protocol.RoomLine) -> None:
        """A line or action for a room the person is in; a chat line may be
        a block, with the lobby's rules (``_relay``)."""
        if line.kind not in ("chat", "action"):
            if self._within_rate("it was not sent"):
                self._tell(protocol.ErrorNotice(f"A room line's kind is chat or action, not {excerpt(line.kind, 20)}."))
            return
        refused = blocks.too_many_lines(line.text, self.limits.max_lines) if blocks.is_block_sent(line) else None
        if refused is not None:
            self._refuse_block(refused)
            return
        if not self._admit(line.text, blocks.cost(line)) or not self._rooms_served():
            return
        assert self._rooms is not None
        try:
            self._rooms.say(self._me, line.room.strip(), line.kind, line.text, echo=self._echo)
        except RoomRefused as refused:
            self._tell(protocol.ErrorNotice(f"{refused} The line was not sent."))
            return
        self._log_relay(line.room, line.text)

    def _rooms_served(self) -> bool:
        """Whether this person may use rooms here (if not, told why)."""
        if self._rooms is None:
            self._tell(protocol.ErrorNotice(NO_ROOMS_HERE))
        elif not self._in_rooms:
            self._tell(protocol.ErrorNotice(ROOMS_NOT_ASKED))
        return self._in_rooms

    def _log_relay(self, room: str, text: str) -> None:
        if self.log_messages:
            log.info("%s to %s: %s", self._me.name, printable_text(excerpt(room, 40)), printable_text(text))
        else:
            log.info("%s to %s: %d characters", self._me.name, printable_text(excerpt(room, 40)), len(text))

    def _part(self, goodbye: protocol.Goodbye) -> None:
        """The person leaves, with a parting line if it passes the checks."""
        if goodbye.reason and self._admit(goodbye.reason):
            self.parting = goodbye.reason
        self._stage = Stage.ENDED

    def _not_expected(self, event: protocol.Event) -> None:
        if self._within_rate("it was not answered"):
            self._tell(protocol.ErrorNotice(f"{type(event).__name__} is not expected now."))

    # The checks.

    @property
    def _me(self) -> Membership:
        assert self.membership is not None, "only a member in the room chats"
        return self.membership

    def _look_alike_holder(self, name: str) -> str | None:
        """Who holds a name that looks the same as ``name`` (not merely the
        same in another case), to say so in the refusal."""
        holder = self.room.holder(name)
        return holder if holder is not None and holder.casefold() != name.casefold() else None

    def _may_use(self, name: str) -> bool:
        """Whether ``name`` (and its look-alikes) is left to this person. A
        name the allow file reserves is its key's, whoever registered it
        before; any other is free unless registered to another key."""
        owner = self._reserved_for(name)
        if owner is not None:
            return owner == self.fingerprint
        return self._registrations is None or self._registrations.may_use(name, self.fingerprint)

    def _reserved_for(self, name: str) -> str | None:
        """The key the allow file keeps ``name`` for, if any."""
        allowed = self._allowed()
        return None if allowed is None else allowed.owner(name)

    def _register(self, name: str) -> None:
        """The name taken (at join or /nick) becomes the key's, if it can;
        one the allow file keeps for it is its already, and not counted."""
        if self._registrations is None or self._reserved_for(name) is not None:
            return
        # Registered without a word (the README says so, /whois shows it):
        # a line at every new name would be noise; the cap is told.
        taken = self._registrations.take(name, self.fingerprint)
        if taken is Taken.REGISTERED:
            log.info("%s: registered %s to %s", self.peer, name, self.fingerprint)
        elif taken is Taken.AT_CAP:
            self._tell(protocol.Notice(NAME_AT_CAP.format(name=name, cap=self._registrations.cap)))

    def _admit(self, text: str, cost: int = 1) -> bool:
        """Whether a line of text from the person may go out (``cost``: its
        flood control tokens, a block's one a line); if not, they are told
        why, so that nothing is dropped in silence."""
        if not text.strip():
            self._tell(protocol.ErrorNotice("An empty message was not sent."))
            return False
        size = len(text.encode("utf-8"))
        if size > self.limits.max_message_bytes:
            self._tell(
                protocol.ErrorNotice(
                    f"The message was not sent: it is {size} bytes long, and the limit is "
                    f"{self.limits.max_message_bytes}."
                )
            )
            return False
        # The excerpt only for a refusal: it would cost a pass over every line.
        if cost > 1:  # a block: named by its first line
            first = text.partition("\n")[0]
            return self._within_rate(
                lambda: (
                    f'the message of {cost} lines from "{excerpt(first)}" was not sent (each line counts as a message)'
                ),
                cost,
            )
        return self._within_rate(lambda: f'"{excerpt(text)}" was not sent')

    def _within_rate(self, refused: str | Callable[[], str], cost: int = 1) -> bool:
        """Flood control: True if the request may be acted on (``cost``: its
        tokens); if not, the person is told (``refused`` says what did not
        happen, or makes it)."""
        wait = self.flood_control.take(cost)
        if wait:
            what = refused() if callable(refused) else refused
            self._tell(
                protocol.ErrorNotice(
                    f"Slow down: {what}. You can send {self.limits.burst} "
                    f"messages at once, then {self.limits.rate:g} a second; wait {wait:.1f} s."
                )
            )
            return False
        return True


def line_id_of(text: str) -> int | None:
    """The message ID ``text`` names, or None if no line can have it: not
    digits, 0, or above SQLite's largest integer (which the store could not
    even be asked about)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        return None
    number = int(text)
    return number if 0 < number <= MAX_LINE_ID else None


def device_fingerprint(text: str) -> str:
    """The fingerprint of the key ``text`` names: a fingerprint
    (``SHA256:...``) or an OpenSSH public key line (``ssh-ed25519 AAAA...
    [comment]``), as in an allow file.

    Raises:
        ValueError: it is neither (the message says why).
    """
    words = text[:4096].split()  # far more than an ssh-ed25519 line: no longer text is parsed
    if not words:
        raise ValueError("Give the key: its fingerprint (SHA256:...) or its ssh-ed25519 public key line")
    if words[0].startswith("SHA256:"):
        if not crypto.FINGERPRINT_PATTERN.fullmatch(words[0]):
            raise ValueError(f"{excerpt(words[0], 60)!r} is not a fingerprint: SHA256: and 43 base64 characters")
        return words[0]
    if words[0].startswith(("ssh-", "ecdsa-", "sk-")) and len(words) >= 2:
        try:
            return crypto.person_fingerprint(crypto.openssh_public_key(words[0], words[1]))
        except (crypto.UnsupportedKeyError, crypto.KeyFormatError) as exc:
            raise ValueError(f"That key cannot be used: {exc}") from None
    raise ValueError(f"{excerpt(words[0], 60)!r} is not a key: give a fingerprint (SHA256:...) or an ssh-ed25519 line")


def _anyone() -> AllowList | None:
    """No allow list: a server open to all."""
    return None


def recipient_name(raw: str) -> str | None:
    """A private line's recipient, to be looked up by its names.key, or
    None if it cannot be a username. Its length is checked first: no longer
    text is normalized, nor made a key to look up (in a cluster, a Redis
    key)."""
    if len(raw) > 4 * protocol.MAX_USERNAME_LENGTH:  # room for what NFC joins
        return None
    name = raw.strip()
    return name if name and name.isprintable() else None


Rule = Callable[[MemberSession, Any], None]

#: Events with the same meaning at every stage.
_ANY_STAGE: dict[type, Rule] = {
    protocol.Goodbye: MemberSession._left,
    protocol.ConnectionClosed: MemberSession._left,
    protocol.MalformedMessage: MemberSession._not_understood,
    protocol.EchoOwnLines: MemberSession._echo_on,
    protocol.Stamps: MemberSession._stamps_on,
    protocol.Multiline: MemberSession._multiline_on,
    protocol.TicketRequest: MemberSession._give_ticket,
    protocol.Rooms: MemberSession._rooms_on,
}

#: What each event does at each stage (h11's table of transitions).
RULES: dict[Stage, dict[type, Rule]] = {
    Stage.NAMING: {**_ANY_STAGE, protocol.KeyProof: MemberSession._prove, protocol.Username: MemberSession._choose},
    Stage.CHATTING: {
        **_ANY_STAGE,
        protocol.ChatLine: MemberSession._relay,
        protocol.ActionLine: MemberSession._relay_action,
        protocol.PrivateLine: MemberSession._relay_private,
        protocol.NickRequest: MemberSession._rename,
        protocol.UserListRequest: MemberSession._list_users,
        protocol.Away: MemberSession._set_away,
        protocol.Back: MemberSession._back,
        protocol.WhoisRequest: MemberSession._whois,
        protocol.DeviceAdd: MemberSession._device_add,
        protocol.DeviceRemove: MemberSession._device_remove,
        protocol.DeviceListRequest: MemberSession._device_list,
        protocol.SearchRequest: MemberSession._search_history,
        protocol.OperatorCommand: MemberSession._operate,
        protocol.HistoryRequest: MemberSession._history,
        protocol.MentionsRequest: MemberSession._mentions,
        protocol.RoomRequest: MemberSession._room_request,
        protocol.RoomLine: MemberSession._room_line,
        protocol.Goodbye: MemberSession._part,
    },
}

#: The answer to an event with no row in its stage.
UNEXPECTED: dict[Stage, Rule] = {
    Stage.NAMING: MemberSession._choose_first,
    Stage.CHATTING: MemberSession._not_expected,
}
