"""What the client does with lines typed and events received, without I/O.

- ``COMMANDS``, the table of slash commands; ``/help`` is made from it
  (the model is ssh-chat's command table). ``run_line`` turns one typed line
  into messages to send or a local answer.
- ``Session``: what the client remembers while chatting (names online, whom
  it ignores, who wrote privately last).
- ``Style`` and ``render``: how an event is shown, with or without colour.
- ``complete``: tab completion of names and commands.

The rest of the client (``link``, ``conversation``, ``session``) owns the
socket, the threads and the terminal; it passes in a
``Context`` whose ``send``/``show``/``error`` do the I/O, so that all of this
is tested without sockets.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from socket_chat import protocol
from socket_chat.chat.commands import Command, CommandTable
from socket_chat.chat.presentation import (
    block_text,
    format_duration,
    format_length,
    mentions,
    printable_text,
    split_name,
)
from socket_chat.chat.search import SearchRefused, parse_search
from socket_chat.client.rooms import ROOM_EVENTS, RoomState, render_room
from socket_chat.protocol import (
    GUEST_MARK,
    ActionLine,
    ActionMessage,
    Away,
    AwayReply,
    Back,
    ChatLine,
    ChatMessage,
    DeviceAdd,
    DeviceList,
    DeviceListRequest,
    DeviceRemove,
    ErrorNotice,
    Greeting,
    HistoryLine,
    HistoryMessage,
    HistoryRequest,
    MalformedMessage,
    MentionsRequest,
    Motd,
    NickChanged,
    NickRequest,
    Notice,
    OfflineMessage,
    OperatorCommand,
    OperatorStatus,
    PageEnd,
    PrivateLine,
    PrivateMessage,
    SearchResult,
    StampedLine,
    Unread,
    UserBanned,
    UserJoined,
    UserKicked,
    UserLeft,
    UserList,
    UserListRequest,
    UserParted,
    Welcome,
    WhoisReply,
    WhoisRequest,
)

# --- what the client remembers -------------------------------------------------


class Session:
    """State shared by the receiver thread (which observes events) and the
    main thread (which runs commands and completes names), under a lock."""

    def __init__(self, own_name: str = "") -> None:
        self._lock = threading.Lock()
        self.own_name = own_name
        self._online: dict[str, str] = {}  # casefolded -> as shown
        self._ignored: dict[str, str] = {}  # casefolded -> as typed
        self.last_private_from: str | None = None
        self._user_lists_to_show: deque[bool] = deque()  # one per request sent
        #: The server sends this client's own lines back (EchoOwnLines): they
        #: are shown from there, as the others see them.
        self.echoed = False
        self._last_line: tuple[str, str, str] | None = None  # the last chat line or action shown live
        #: Show ``NAME (guest): TEXT`` for a guest's lines (--mark-guests, /marks).
        self.mark_guests = False
        self._guests: set[str] = set()  # casefolded names of the guests online, from the last user list
        self._joined_since_list = False  # someone joined after the last user list: its guests are not known
        self._lists_silent = 0  # user lists asked for quietly, not answered yet
        #: The server said this person is one of its operators (OperatorStatus):
        #: /help then lists the operator's commands too.
        self.operator = False
        #: The server gives lines IDs and times (it offered ``Stamps``, and we took them).
        self.stamped = False
        #: The server takes messages of several lines (it offered them, and
        #: we took them): a block typed goes as one; else a line at a time.
        self.multiline = False
        #: The ID of the oldest line shown (``/history`` asks for those before it).
        self.oldest_id: str | None = None
        self.at_beginning = False  # /history reached the first line kept
        self._pages: deque[str] = deque()  # "history" or "mentions", one per request sent
        #: The rooms joined, the current one, what is unread (client/rooms.py).
        self.rooms = RoomState()

    def page_requested(self, what: str) -> None:
        """A ``/history`` or ``/mentions`` went out: its lines are told apart
        by the order of the answers."""
        with self._lock:
            self._pages.append(what)

    def forget_pages(self) -> None:
        """After a reconnection: the pages asked of the last server are not
        answered, and this server's IDs may start again."""
        with self._lock:
            self._pages.clear()
            self.oldest_id, self.at_beginning = None, False

    def note_line(self, event: StampedLine | HistoryLine | PageEnd) -> None:
        """Keep the oldest ID shown (a line of the history or a page, or the
        first live line), and where a page ends."""
        with self._lock:
            if isinstance(event, PageEnd):
                what = self._pages.popleft() if self._pages else event.what
                if what == "history" and not event.more:
                    self.at_beginning = True
                return
            if isinstance(event, StampedLine) and self.oldest_id is not None:
                return
            if isinstance(event, HistoryLine) and self._pages and self._pages[0] != "history":
                return  # a mention: not where the history stands
            if self.oldest_id is None or _id_order(event.id) < _id_order(self.oldest_id):
                self.oldest_id = event.id

    def names(self) -> list[str]:
        """Everyone known to be online, this client included."""
        with self._lock:
            return sorted(self._online.values(), key=str.casefold)

    def is_me(self, name: str) -> bool:
        return name.casefold() == self.own_name.casefold()

    def ignore(self, name: str) -> bool:
        """Hide ``name``'s messages. False if already hidden."""
        with self._lock:
            if name.casefold() in self._ignored:
                return False
            self._ignored[name.casefold()] = name
            return True

    def unignore(self, name: str) -> bool:
        """Show ``name``'s messages again. False if they were not hidden."""
        with self._lock:
            return self._ignored.pop(name.casefold(), None) is not None

    def ignores(self, name: str) -> bool:
        with self._lock:
            return name.casefold() in self._ignored

    def user_list_requested(self, show: bool) -> None:
        """A UserListRequest went out; its answer is shown if ``show``."""
        with self._lock:
            self._user_lists_to_show.append(show)
            self._lists_silent += not show

    def user_list_unsent(self, show: bool) -> None:
        """The UserListRequest said by ``user_list_requested(show)`` did not
        go out: no answer is coming for it."""
        with self._lock:
            for index in range(len(self._user_lists_to_show) - 1, -1, -1):
                if self._user_lists_to_show[index] == show:  # the latest such (another may be asked meanwhile)
                    del self._user_lists_to_show[index]
                    self._lists_silent -= not show
                    return

    def forget_lists(self) -> None:
        """After a reconnection: the user lists asked of the last server are
        not answered (a quiet one left waiting would hide the next /users)."""
        with self._lock:
            self._user_lists_to_show.clear()
            self._lists_silent = 0

    def is_guest(self, name: str) -> bool:
        """Whether ``name`` was a guest in the last user list (or renamed from one)."""
        with self._lock:
            return name.casefold() in self._guests

    def guests_unknown(self) -> bool:
        """With guest marks on: someone joined whose guest or not is unknown,
        and no quiet user list is on its way already (ask for one: the
        caller does, and says so with ``user_list_requested``)."""
        with self._lock:
            return self.mark_guests and self._joined_since_list and not self._lists_silent

    def observe(self, event) -> None:
        """Keep track of names from an event the server sent."""
        with self._lock:
            if isinstance(event, Welcome):
                self.own_name = event.name
                self._online[event.name.casefold()] = event.name
            elif isinstance(event, UserJoined):
                self._online[event.name.casefold()] = event.name
                self._joined_since_list = True
            elif isinstance(event, (UserLeft, UserParted, UserKicked, UserBanned)):
                self._online.pop(event.name.casefold(), None)
                self._guests.discard(event.name.casefold())
            elif isinstance(event, OperatorStatus):
                self.operator = bool(event.operator)
            elif isinstance(event, NickChanged):
                self._renamed(event.old, event.new)
            elif isinstance(event, UserList):
                self._online = {name.casefold(): name for name in event.names()}
                self._guests = {
                    name.removesuffix(GUEST_MARK).casefold() for name, _ in event.members() if name.endswith(GUEST_MARK)
                }
                self._joined_since_list = False
            elif isinstance(event, (PrivateMessage, OfflineMessage)) and not self.is_me(event.sender):
                self.last_private_from = event.sender
            elif isinstance(event, ChatMessage):
                self._last_line = (event.sender, event.text, "chat")
            elif isinstance(event, ActionMessage):
                self._last_line = (event.sender, event.text, "action")

    def _renamed(self, old: str, new: str) -> None:
        self._online.pop(old.casefold(), None)
        if old.casefold() in self._guests:  # a guest stays one under a new name
            self._guests.discard(old.casefold())
            self._guests.add(new.casefold())
        self._online[new.casefold()] = new
        if old.casefold() == self.own_name.casefold():
            self.own_name = new
        if self._ignored.pop(old.casefold(), None) is not None:
            self._ignored[new.casefold()] = new  # an ignored person stays ignored under a new name
        if self.last_private_from and self.last_private_from.casefold() == old.casefold():
            self.last_private_from = new

    def unseen(self, history: list[HistoryMessage | HistoryLine]) -> list[HistoryMessage | HistoryLine]:
        """The part of a history, on coming back after a reconnection, said
        after the last line shown live (all of it if that line is not in
        it). Matched by content, not time: the server's clock is not ours."""
        with self._lock:
            last = self._last_line
        for index in range(len(history) - 1, -1, -1):
            entry = history[index]
            if (entry.sender, entry.text, entry.kind) == last:
                return history[index + 1 :]
        return history

    def wants_me(self, event) -> bool:
        """True for what calls for this person: a private message from
        someone else, or a line or action of someone else's that mentions
        the person's name (the whole name, in any case)."""
        sender = getattr(event, "sender", None)
        if sender is None or self.is_me(sender) or not self.own_name:
            return False
        if isinstance(event, (PrivateMessage, OfflineMessage)):
            return True
        return isinstance(event, (ChatMessage, ActionMessage, protocol.RoomMessage)) and mentions(
            event.text, self.own_name
        )

    def shows(self, event) -> bool:
        """False for what this client hides: messages from ignored people,
        and the answers to user lists it asked for itself."""
        if isinstance(event, UserList):
            with self._lock:
                show = self._user_lists_to_show.popleft() if self._user_lists_to_show else True
                self._lists_silent -= not show
                return show
        if isinstance(event, ErrorNotice) and event.text.startswith(LIST_REFUSED):
            with self._lock:  # flood control refused a list: the oldest asked for (the server answers in order)
                show = self._user_lists_to_show.popleft() if self._user_lists_to_show else True
                self._lists_silent -= not show
                return show
        sender = getattr(event, "sender", None)
        return sender is None or not self.ignores(sender)


#: How a server's flood control refuses a UserListRequest (chat/member.py).
LIST_REFUSED = "Slow down: the user list was not sent."


def _id_order(line_id: str) -> tuple[int, str]:
    """IDs are decimal numbers on this protocol's servers; any other text
    sorts after them."""
    return (int(line_id), "") if line_id.isdigit() else (2**64, line_id)


def plain(event):
    """A stamped message as the older one it stands for (ChatMessage,
    ActionMessage, Notice, HistoryMessage), so that it is ignored, counted
    and shown as those are; any other event as it is."""
    if isinstance(event, StampedLine):
        if event.kind == "action":
            return ActionMessage(event.sender, event.text)
        if event.kind == "notice":
            return Notice(event.text)
        return ChatMessage(event.sender, event.text)
    if isinstance(event, HistoryLine):
        return event.plain()
    return event


# --- how events are shown ------------------------------------------------------

RESET = "\x1b[0m"
#: Colours for names (ANSI SGR codes): none of them is used for notices
#: (yellow), private messages (magenta) or errors (red).
NAME_COLOURS = ("32", "34", "36", "92", "94", "96")
NOTICE_COLOUR, PRIVATE_COLOUR, ERROR_COLOUR = "33", "35", "31"
MENTION_HIGHLIGHT = "1;7"  # bold, reverse video: a line that mentions you
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def name_colour(name: str) -> str:
    """The SGR colour of ``name``: the same in every run and on every client
    (CRC-32, not ``hash()``, which changes per process), and the same in any
    case, since names are unique without regard to case."""
    return NAME_COLOURS[zlib.crc32(name.casefold().encode("utf-8")) % len(NAME_COLOURS)]


def colour_wanted(no_color_option: bool, environ, stdout_is_terminal: bool) -> bool:
    """Colour only on a terminal, and never with --no-color or NO_COLOR set
    to anything but "" (https://no-color.org)."""
    return stdout_is_terminal and not no_color_option and not environ.get("NO_COLOR")


class Style:
    """Wraps pieces of a line in colour, or leaves them alone."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def _paint(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}{RESET}" if self.colour else text

    def name(self, name: str) -> str:
        return self._paint(name_colour(name), name)

    def notice(self, text: str) -> str:
        return self._paint(NOTICE_COLOUR, text)

    def private(self, text: str) -> str:
        return self._paint(PRIVATE_COLOUR, text)

    def error(self, text: str) -> str:
        return self._paint(ERROR_COLOUR, text)

    def mention(self, line: str) -> str:
        """A whole line that calls for the person; its own colours are
        dropped so that the highlight runs to its end."""
        return self._paint(MENTION_HIGHLIGHT, _SGR.sub("", line))


PLAIN = Style(colour=False)


def clock_time(unix_seconds: float) -> str:
    """``HH:MM`` in local time."""
    return time.strftime("%H:%M", time.localtime(unix_seconds))


def render(event, session: Session | None = None, style: Style = PLAIN, dated: bool = True) -> list[str]:
    """The lines that show ``event`` (none for an event that is not shown).
    All text from the network passes ``printable_text`` here. A history
    line carries its time unless ``dated`` is False (the caller then puts
    the time first, as for every line with --timestamps)."""
    clean = printable_text
    if isinstance(event, ROOM_EVENTS):
        return render_room(event, session.rooms if session else RoomState(), style.name, style.notice, style.error)
    if isinstance(event, ChatMessage):
        sender, mark = clean(event.sender), _guest_mark(event.sender, session)
        return [f"{style.name(sender)}{mark}: {block_text(event.text, f'{sender}{mark}: ')}"]
    if isinstance(event, ActionMessage):
        return [f"* {style.name(clean(event.sender))}{_guest_mark(event.sender, session)} {clean(event.text)}"]
    if isinstance(event, PrivateMessage):
        return [_render_private(event, session, style)]
    if isinstance(event, HistoryMessage):
        return [_render_history(event, style, dated)]
    if isinstance(event, SearchResult):
        return [_render_found(event, style)]
    if isinstance(event, OfflineMessage):
        when = date_time(event.sent_at)
        return [style.private(f"[{when} {clean(event.sender)} -> me] {clean(event.text)}")]
    if isinstance(event, UserList):
        return _render_user_list(event, style)
    if isinstance(event, Motd):
        return [style.notice(f"[motd] {clean(line)}") for line in event.text.split("\n")]
    if isinstance(event, Greeting):
        return [_render_greeting(event, style)]
    notice = _notice_text(event)
    if notice is not None:
        return [style.notice(f"* {notice}")]
    if isinstance(event, ErrorNotice):
        return [style.error(f"Error: {clean(event.text)}")]
    if isinstance(event, MalformedMessage):
        return [style.error(f"Error: the server sent a message this client cannot read ({event.reason}).")]
    if isinstance(event, Unread):
        return _render_unread(event, style)
    if isinstance(event, PageEnd):
        return [style.notice(f"* {page_end_text(event)}")]
    return []


def _guest_mark(sender: str, session: Session | None) -> str:
    """`` (guest)`` after a guest's name, with guest marks on; else nothing."""
    return GUEST_MARK if session is not None and session.mark_guests and session.is_guest(sender) else ""


#: Between the lines a returning person had seen and those new to them.
NEW_MARKER = "---------------- new since you left ----------------"


def _render_unread(event: Unread, style: Style) -> list[str]:
    """``* 137 new lines since you left at 18:02; showing the last 20.
    /history for more.``, then the marker (nothing new: the line alone)."""
    when = clock_time(event.left_at)
    if time.strftime("%Y-%m-%d", time.localtime(event.left_at)) != time.strftime("%Y-%m-%d"):
        when = time.strftime("%Y-%m-%d ", time.localtime(event.left_at)) + when
    if event.new == 0:
        return [style.notice(f"* No new lines since you left at {when}.")]
    lines = "line" if event.new == 1 else "lines"
    if event.shown < event.new:
        text = (
            f"* {event.new:,} new {lines} since you left at {when}; showing the last {event.shown}. /history for more."
        )
    else:
        text = f"* {event.new:,} new {lines} since you left at {when}."
    return [style.notice(text), style.notice(NEW_MARKER)]


def page_end_text(event: PageEnd) -> str:
    """What a page of /history or /mentions ends with."""
    if event.what == "mentions":
        if event.count == 0:
            return "No one mentioned you while you were away."
        return f"{event.count} lines mentioned you while you were away (above, newest first)."
    if event.more:
        return f"{event.count} earlier lines above. /history for more."
    if event.count == 0:
        return "Nothing earlier: that is the beginning of the history."
    return f"{event.count} earlier lines above: that is the beginning of the history."


def _notice_text(event) -> str | None:
    clean = printable_text
    if isinstance(event, UserJoined):
        return f"{clean(event.name)} joined the chat."
    if isinstance(event, UserLeft):
        return f"{clean(event.name)} left the chat."
    if isinstance(event, UserParted):
        return f"{clean(event.name)} left the chat: {clean(event.message)}"
    if isinstance(event, NickChanged):
        return f"{clean(event.old)} is now known as {clean(event.new)}."
    if isinstance(event, UserKicked):
        because = f": {clean(event.reason)}" if event.reason else "."
        return f"{clean(event.name)} was kicked by the operator{because}"
    if isinstance(event, UserBanned):
        lasting = f" for {format_length(event.seconds)}" if event.seconds else ""
        because = f": {clean(event.reason)}" if event.reason else "."
        return f"{clean(event.name)} was banned by the operator{lasting}{because}"
    if isinstance(event, OperatorStatus):
        if event.operator:
            return "You are an operator of this server: /help lists your commands."
        return "You are no longer an operator of this server."
    if isinstance(event, AwayReply):
        return (
            f"{clean(event.name)} is away: {clean(event.message)}" if event.message else f"{clean(event.name)} is away."
        )
    if isinstance(event, Notice):
        return clean(event.text)
    if isinstance(event, WhoisReply):
        return whois_text(event)
    if isinstance(event, DeviceList):
        return device_list_text(event)
    return None


def device_list_text(listed: DeviceList) -> str:
    """``Devices of SHA256:...: SHA256:... (since 2026-12-06), ...`` or none."""
    devices = [
        f"{printable_text(fingerprint)} (since {time.strftime('%Y-%m-%d', time.localtime(added))})"
        for fingerprint, added in listed.devices()
    ]
    owner = printable_text(listed.owner)
    return f"Devices of {owner}: {', '.join(devices)}." if devices else f"{owner} has no devices."


def whois_text(reply: WhoisReply) -> str:
    """``alice: online for 5 minutes, key SHA256:..., registered since 2026-12-06.``"""
    clean = printable_text
    if reply.state == "offline":
        state = "offline"
    else:
        state = f"online for {format_duration(reply.online)}"
        if reply.state == "away":
            state += f", away: {clean(reply.away)}" if reply.away else ", away"
    key = f"key {clean(reply.fingerprint)}" if reply.fingerprint else "a guest (no key)"
    registered = (
        f"registered since {time.strftime('%Y-%m-%d', time.localtime(reply.registered_at))}"
        if reply.registered_at
        else "not registered"
    )
    return f"{clean(reply.name)}: {state}, {key}, {registered}."


def _render_private(event: PrivateMessage, session: Session | None, style: Style) -> str:
    clean = printable_text
    if session is not None and session.is_me(event.sender):
        return style.private(f"[me -> {clean(event.recipient)}] {clean(event.text)}")
    return style.private(f"[{clean(event.sender)} -> me] {clean(event.text)}")


def _render_history(event: HistoryMessage, style: Style, dated: bool = True) -> str:
    clean = printable_text
    marker = f"[history {clock_time(event.sent_at)}]" if dated else "[history]"
    if event.kind == "action":
        return f"{style.notice(marker)} * {style.name(clean(event.sender))} {clean(event.text)}"
    said = f"{marker} {clean(event.sender)}: "
    return f"{style.notice(marker)} {style.name(clean(event.sender))}: {block_text(event.text, said)}"


def date_time(unix_seconds: float) -> str:
    """``YYYY-MM-DD HH:MM`` in local time."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_seconds))


def _render_found(event: SearchResult, style: Style) -> str:
    """A search's line: ``[found 2026-12-06 18:02] Ann: the text``."""
    clean = printable_text
    marker = f"[found {date_time(event.sent_at)}]"
    if event.kind == "action":
        return f"{style.notice(marker)} * {style.name(clean(event.sender))} {clean(event.text)}"
    said = f"{marker} {clean(event.sender)}: "
    return f"{style.notice(marker)} {style.name(clean(event.sender))}: {block_text(event.text, said)}"


def _render_user_list(event: UserList, style: Style) -> list[str]:
    members, away = event.members(), event.away()
    lines = [style.notice(f"* {len(members)} online:")]
    for name, seconds in members:
        state = format_duration(seconds)
        if name in away:
            state += f", away: {printable_text(away[name])}" if away[name] else ", away"
        lines.append(f"  {style.name(printable_text(name))} ({state})")
    return lines


def _render_greeting(event: Greeting, style: Style) -> str:
    """``* You are Randall Flagg. 3 others here: Ann, Bob and Jaime.``: the
    names listed, and how many more there are in a big room."""
    you = f"* You are {style.name(printable_text(event.name))}."
    if event.others == 0:
        return f"{you} No one else is here yet."
    names = [style.name(printable_text(name)) for name in event.listed()[: event.others]]
    unlisted = event.others - len(names)
    if unlisted:
        names.append(f"{unlisted:,} other{'s' if unlisted > 1 else ''}")
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    here = f"{event.others:,} other{'s' if event.others > 1 else ''} here"
    return f"{you} {here}: {listed}."


# --- commands --------------------------------------------------------------------


class QuitRequested(Exception):
    """The person typed /quit; ``message`` is the parting line ("" for none)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Context:
    """What a command may do: send a message, show a line, report an error."""

    session: Session
    send: Callable[[protocol.Message], None]
    show: Callable[[str], None]
    error: Callable[[str], None]
    #: Turn the bell for mentions and private messages on or off; True if on now.
    toggle_bell: Callable[[], bool] | None = None


class UsageError(Exception):
    """A command was typed without what it needs."""


def _needs(argument: str, command: str) -> None:
    """Raise UsageError if the argument the command needs is missing."""
    if not argument:
        raise UsageError(command)


def help_lines(operator: bool = False) -> list[str]:
    """One line per command, from the table (``/help`` and ``--help``);
    with ``operator``, the operator's commands after them."""
    lines = COMMANDS.help_lines(
        extra=[
            ("//TEXT", "send TEXT starting with one /"),
            ("Alt-Enter", "on a terminal: a new line of the same message (a paste is one message too); Enter sends it"),
        ]
    )
    if operator:
        lines += ["Operator commands (for a key in the server's --operators file):"]
        lines += [f"  {line}" for line in OPERATOR_COMMANDS.help_lines()]
    return lines


def _help(ctx: Context, argument: str) -> None:
    for line in help_lines(ctx.session.operator):
        ctx.show(line)


def _users(ctx: Context, argument: str) -> None:
    ctx.session.user_list_requested(show=True)
    ctx.send(UserListRequest())


def _whois(ctx: Context, argument: str) -> None:
    _needs(argument, "/whois")
    ctx.send(WhoisRequest(argument.strip()))


def _device(ctx: Context, argument: str) -> None:
    verb, _, key = argument.strip().partition(" ")
    if verb == "list" and not key.strip():
        ctx.send(DeviceListRequest())
    elif verb in ("add", "remove") and key.strip():
        ctx.send(DeviceAdd(key.strip()) if verb == "add" else DeviceRemove(key.strip()))
    else:
        raise UsageError("/device")


def _marks(ctx: Context, argument: str) -> None:
    wanted = argument.strip().casefold()
    if wanted not in ("", "on", "off"):
        raise UsageError("/marks")
    ctx.session.mark_guests = not ctx.session.mark_guests if not wanted else wanted == "on"
    if ctx.session.mark_guests:
        ctx.show("* Guest marks are on: a guest's lines show as NAME (guest): TEXT.")
    else:
        ctx.show("* Guest marks are off.")


def _msg(ctx: Context, argument: str) -> None:
    _needs(argument, "/msg")
    name, text = split_name(argument, ctx.session.names())
    _needs(text, "/msg")
    ctx.send(PrivateLine(name, text))


def _reply(ctx: Context, argument: str) -> None:
    _needs(argument, "/reply")
    if ctx.session.last_private_from is None:
        ctx.error("No private message to reply to yet.")
        return
    ctx.send(PrivateLine(ctx.session.last_private_from, argument))


def _search(ctx: Context, argument: str) -> None:
    _needs(argument, "/search")
    try:
        request = parse_search(argument)
    except SearchRefused as refused:
        ctx.error(f"Not searched: {refused}.")
        return
    ctx.send(request)


def _me(ctx: Context, argument: str) -> None:
    _needs(argument, "/me")
    _say(ctx, argument, "action")


def _away(ctx: Context, argument: str) -> None:
    ctx.send(Away(argument))


def _back(ctx: Context, argument: str) -> None:
    ctx.send(Back())


def _nick(ctx: Context, argument: str) -> None:
    _needs(argument, "/nick")
    ctx.send(NickRequest(argument))


def _ignore(ctx: Context, argument: str) -> None:
    _needs(argument, "/ignore")
    if ctx.session.is_me(argument):
        ctx.error("You cannot ignore yourself.")
    elif ctx.session.ignore(argument):
        ctx.show(f"* Ignoring {argument}: their messages are hidden on this client.")
    else:
        ctx.error(f"You are already ignoring {argument}.")


def _unignore(ctx: Context, argument: str) -> None:
    _needs(argument, "/unignore")
    if ctx.session.unignore(argument):
        ctx.show(f"* No longer ignoring {argument}.")
    else:
        ctx.error(f"You are not ignoring {argument}.")


def _bell(ctx: Context, argument: str) -> None:
    if ctx.toggle_bell is None:
        ctx.error("There is no bell here: output is not a terminal.")
    elif ctx.toggle_bell():
        ctx.show("* The bell is on: it rings when you are mentioned or get a private message.")
    else:
        ctx.show("* The bell is off.")


def _history(ctx: Context, argument: str) -> None:
    """``/history [N]``: N lines before the oldest one shown."""
    argument = argument.strip()
    if argument and not (argument.isascii() and argument.isdigit() and 0 < int(argument) <= 10_000):
        raise UsageError("/history")
    if not ctx.session.stamped:
        ctx.error("This server keeps no history to read back (it is older than /history).")
        return
    if ctx.session.at_beginning:
        ctx.show("* That is the beginning of the history: nothing is earlier.")
        return
    ctx.session.page_requested("history")
    ctx.send(HistoryRequest(ctx.session.oldest_id or "", int(argument) if argument else 0))


def _mentions(ctx: Context, argument: str) -> None:
    if not ctx.session.stamped:
        ctx.error("This server does not keep mentions (it is older than /mentions).")
        return
    ctx.session.page_requested("mentions")
    ctx.send(MentionsRequest())


def _quit(ctx: Context, argument: str) -> None:
    raise QuitRequested(argument)


# The room commands (client/rooms.py): a room named with # first, else the current one.

#: A room command on a server that offered no rooms.
NO_ROOMS = "This server has no rooms (it is older, or a server of a cluster): you are in the lobby."
IN_THE_LOBBY = "You are in the lobby: name a room (#NAME), or /join one first."


def _rooms_served(ctx: Context) -> bool:
    if not ctx.session.rooms.offered:
        ctx.error(NO_ROOMS)
    return ctx.session.rooms.offered


def _room_and_rest(ctx: Context, argument: str) -> tuple[str | None, str]:
    """``#ROOM REST`` or ``REST`` (the current room; None in the lobby)."""
    argument = argument.strip()
    if argument.startswith("#"):
        room, _, rest = argument.partition(" ")
        return room, rest.strip()
    return ctx.session.rooms.current, argument


def _join(ctx: Context, argument: str) -> None:
    _needs(argument.strip(), "/join")
    if not _rooms_served(ctx):
        return
    room = argument.split()[0]
    room = room if room.startswith("#") else f"#{room}"
    joined = ctx.session.rooms.find(room)
    if joined is not None:  # a room already joined: switch to it
        ctx.session.rooms.go(joined)
        ctx.show(f"* Now in {printable_text(joined)}.")
        return
    ctx.session.rooms.asked(room)  # a room whose join again after a reconnect was refused
    ctx.send(protocol.RoomRequest("join", room, ""))


def _part(ctx: Context, argument: str) -> None:
    if not _rooms_served(ctx):
        return
    room, reason = _room_and_rest(ctx, argument)
    if room is None:
        ctx.error("The lobby is not left: /part leaves a room, /quit the chat.")
        return
    ctx.send(protocol.RoomRequest("part", room, reason))
    if ctx.session.rooms.find(room) == ctx.session.rooms.current:
        ctx.session.rooms.go(None)  # the next line goes to the lobby, not to the room on its way out


def _list_rooms(ctx: Context, argument: str) -> None:
    if _rooms_served(ctx):
        ctx.send(protocol.RoomRequest("rooms", "", ""))


def _room_request(command: str, needs: bool) -> Callable[[Context, str], None]:
    """``/topic``, ``/mode``: sent for the room named or the current one."""

    def run(ctx: Context, argument: str) -> None:
        if not _rooms_served(ctx):
            return
        room, rest = _room_and_rest(ctx, argument)
        if needs:
            _needs(rest, f"/{command}")
        if room is None:
            ctx.error(IN_THE_LOBBY)
            return
        ctx.send(protocol.RoomRequest(command, room, rest))

    return run


def _who(ctx: Context, argument: str) -> None:
    room, _ = _room_and_rest(ctx, argument)
    if room is None or not ctx.session.rooms.offered:  # the lobby: everyone
        _users(ctx, "")
        return
    ctx.send(protocol.RoomRequest("who", room, ""))


def _invite(ctx: Context, argument: str) -> None:
    _needs(argument.strip(), "/invite")
    if not _rooms_served(ctx):
        return
    name, _, room = argument.strip().rpartition(" ")
    if not (name and room.startswith("#")):  # IRC's order, /invite NAME #ROOM; or the current room
        name, room = argument.strip(), ctx.session.rooms.current or ""
    if not room:
        ctx.error(IN_THE_LOBBY)
        return
    ctx.send(protocol.RoomRequest("invite", room, name))


COMMANDS: CommandTable[Context, None] = CommandTable(
    [
        Command("/help", "", "list the commands", _help),
        Command("/users", "", "who is online, and for how long", _users),
        Command("/whois", "NAME", "whose key a name is, and since when; online or not", _whois),
        Command(
            "/device",
            "list|add|remove [KEY]",
            "the keys that may use your names; add or remove one (SHA256:... or an ssh-ed25519 line)",
            _device,
        ),
        Command("/marks", "[on|off]", "show NAME (guest) with each line from a guest (or not)", _marks),
        Command("/msg", "NAME TEXT", "a private message to NAME only", _msg),
        Command("/reply", "TEXT", "answer the last private message", _reply),
        Command(
            "/search",
            "WORDS [from:NAME] [before:DATE] [after:DATE]",
            "the newest public lines with all the WORDS (DATE: YYYY-MM-DD; word* for a prefix)",
            _search,
        ),
        Command("/me", "ACTION", "show * NAME ACTION to everyone", _me),
        Command("/nick", "NEW", "change your username; everyone is told", _nick),
        Command("/away", "[MESSAGE]", "mark yourself away; who writes to you privately is told", _away),
        Command("/back", "", "no longer away (a line to everyone does it too)", _back),
        Command("/ignore", "NAME", "hide NAME's messages on this client", _ignore),
        Command("/unignore", "NAME", "show NAME's messages again", _unignore),
        Command("/history", "[N]", "show N earlier lines (default 50; the server may send fewer)", _history),
        Command("/mentions", "", "the lines that mentioned you while you were away, newest first", _mentions),
        Command("/bell", "", "ring the bell (or not) when you are mentioned or sent a private message", _bell),
        Command("/join", "#ROOM", "join a room (made if new), or switch to one joined; Alt-1..9, Ctrl-N/P", _join),
        Command("/part", "[#ROOM] [MESSAGE]", "leave a room (the current one)", _part),
        Command("/rooms", "", "the rooms: how many are in each, and its topic", _list_rooms),
        Command("/topic", "[#ROOM] TEXT", "set a room's topic", _room_request("topic", needs=False)),
        Command("/who", "[#ROOM]", "who is in a room (in the lobby: /users)", _who),
        Command(
            "/mode",
            "[#ROOM] +i|-i",
            "+i: only those invited may join (the room's founder)",
            _room_request("mode", True),
        ),
        Command("/invite", "NAME [#ROOM]", "let NAME join an invite-only room (bound to their key)", _invite),
        Command("/quit", "[MESSAGE]", "leave, with a parting line others see", _quit),
    ]
)


def _operator(name: str, arguments: str, text: str, needs: bool = True) -> Command[Context, None]:
    """A row for an operator's command: sent to the server as it is typed
    (the server judges who may; it refuses anyone else with a line)."""

    def run(ctx: Context, argument: str) -> None:
        if needs:
            _needs(argument, f"/{name}")
        ctx.send(OperatorCommand(name, argument))

    return Command(f"/{name}", arguments, text, run)


#: The operator's commands (PROTOCOL.md, "Operators and bans"): always
#: sent, listed by /help only to an operator.
OPERATOR_COMMANDS: CommandTable[Context, None] = CommandTable(
    [
        _operator("kick", "NAME [REASON]", "disconnect NAME, telling them why"),
        _operator(
            "ban",
            "NAME|FINGERPRINT|ADDRESS [DURATION] [REASON]",
            "keep a key (a guest: an address) out, for DURATION (10m, 2h, 7d) or for ever",
        ),
        _operator("unban", "NAME|FINGERPRINT|ADDRESS", "lift a ban"),
        _operator("bans", "", "the bans in force", needs=False),
        _operator("release", "NAME", "free a registered name"),
        _operator("say", "TEXT", "a notice to everyone"),
        _operator("close", "#ROOM [REASON]", "close a room: everyone in it is told why"),
    ]
)


def run_line(line: str, ctx: Context) -> None:
    """Act on one typed line: a command, ``//`` for a line that starts with
    ``/``, or chat. A blank line does nothing.

    Raises:
        QuitRequested: the person typed /quit.
    """
    if "\n" in line:
        rest = _block_of(line, ctx)
        if rest is None:
            return
        line = rest
    if line.startswith("//"):
        _say(ctx, line[1:])
    elif line.startswith("/"):
        _run_command(line, ctx)
    elif line.strip():
        _say(ctx, line)


def _say(ctx: Context, text: str, kind: str = "chat") -> None:
    """A line (or action) for the current room: the lobby's as before."""
    room = ctx.session.rooms.current
    if room is not None:
        ctx.send(protocol.RoomLine(room, kind, text))
    else:
        ctx.send(ChatLine(text) if kind == "chat" else ActionLine(text))


#: A block (several lines, from a paste or Alt-Enter) is chat, never a command.
BLOCK_NOT_A_COMMAND = (
    "A command is one line, and this message has {lines}: nothing was sent. To send lines "
    "that start with /, double the first slash (//)."
)


def _block_of(text: str, ctx: Context) -> str | None:
    """A block typed: sent here as one ChatLine (in a room, one RoomLine),
    its blank lines at either
    end left out (None: nothing more to do, sent or refused). What is left
    of one line is given back, to be run as a line typed. To a server that
    takes no blocks (the connection changed while it was typed), its lines
    go as if typed one by one, as a paste did before blocks."""
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if len(lines) <= 1:
        return lines[0] if lines else None
    if not ctx.session.multiline:
        for line in lines:
            run_line(line, ctx)
        return None
    if lines[0].startswith("/") and not lines[0].startswith("//"):
        ctx.error(BLOCK_NOT_A_COMMAND.format(lines=len(lines)))
        return None
    if lines[0].startswith("//"):
        lines[0] = lines[0][1:]
    _say(ctx, "\n".join(lines))  # to the current room: the lobby's ChatLine, or a room's RoomLine
    return None


def _run_command(line: str, ctx: Context) -> None:
    name, command, argument = COMMANDS.parse(line)
    if command is None:
        command = OPERATOR_COMMANDS.parse(line)[1]
    if command is None:
        ctx.error(
            f"Unknown command {name}; nothing was sent. Type /help for the commands, "
            f"or //{line[1:]} to send the line as it is."
        )
        return
    try:
        command.run(ctx, argument)
    except UsageError:
        ctx.error(f"Usage: {command.usage}")


# --- tab completion ----------------------------------------------------------------

#: Commands after which the next word is a name.
NAME_COMMANDS = ("/msg ", "/ignore ", "/unignore ")


def complete(typed: str, names: list[str]) -> list[str]:
    """Whole-line completions of ``typed`` (the line up to the cursor):
    a name after /msg, /ignore or /unignore; a command after ``/`` at the
    start; a name at the start of a line (then ``": "``, as in IRC).
    Names hold spaces, so the line is completed as a whole."""
    folded = typed.casefold()
    for command in NAME_COMMANDS:
        if folded.startswith(command):
            partial = typed[len(command) :]
            return [f"{typed[: len(command)]}{name} " for name in _starting(names, partial)]
    if typed.startswith("/"):
        return [f"{name} " for name in COMMANDS.names() if name.startswith(folded)]
    if not typed:
        return []
    return [f"{name}: " for name in _starting(names, typed)]


def _starting(names: list[str], partial: str) -> list[str]:
    return [name for name in names if name.casefold().startswith(partial.casefold())]
