"""The IRC server as a peer: Debian's ngircd over TLS, and an IRC client the
load generator drives as it drives ours.

``IrcServer`` runs ngircd in the foreground (``-n``) on 127.0.0.1 and a free
port, TLS only, with a self-signed certificate made for the run by the
``openssl`` command in a temporary folder, and with its per-address and
per-client limits off (``MaxConnectionsIP = 0``, ``MaxPenaltyTime = 0``: the
load generator is no person, as for our server in bench/servers.py).

``IrcConnection`` is sans-I/O like ``protocol.ClientConnection``: TLS through
the standard library's ``ssl.SSLObject`` on memory BIOs, IRC lines in and
out. It gives the load generator the events it knows: ``UsernameRequest``
once TLS is up (answered with NICK, USER and JOIN), ``Welcome`` at the end
of the channel's NAMES (joined: ready, as our ``Welcome`` is), a
``ChatMessage`` for each PRIVMSG to the channel, ``ErrorNotice`` for an
error numeric, ``ConnectionClosed`` at the end. It answers PING itself.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

from bench.loadgen import BenchError
from socket_chat import protocol
from socket_chat.protocol import ChatLine, ChatMessage, ErrorNotice, Message, Username, UsernameRequest, Welcome

CHANNEL = "#bench"
TIMEOUT = 30.0  # seconds for ngircd to start (it makes its DH parameters first) or stop
READY = "ready."  # its log's last line at start: Server "bench.invalid" (on "host") ready.
NOT_INSTALLED = "ngircd is not installed (Debian: apt install ngircd)"
NO_OPENSSL = "the openssl command is not installed (it makes the IRC server's certificate)"
RSA_BITS = 3072  # the certificate's key, as our server's identity key (crypto/identity.py)
READ_SIZE = 256 * 1024
#: Numerics that end a try to register or join, each an error the load
#: generator reports (RFC 2812 §5.2: 400 to 599; 433 is a name taken).
ERROR_NUMERICS = range(400, 600)


class IrcMissing(Exception):
    """ngircd or openssl is not installed; the message says which."""


def find_ngircd() -> str | None:
    """ngircd's path: on the PATH, or in the sbin folders a user's PATH may lack."""
    return shutil.which("ngircd") or shutil.which("ngircd", path="/usr/sbin:/usr/local/sbin")


def missing() -> str | None:
    """Why the IRC peer cannot run here, or None if it can."""
    if find_ngircd() is None:
        return NOT_INSTALLED
    if shutil.which("openssl") is None:
        return NO_OPENSSL
    return None


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, valid a day: (cert, key), the key 0600.

    Raises:
        BenchError: openssl failed.
    """
    cert, key = folder / "cert.pem", folder / "key.pem"
    key.touch(mode=0o600)
    command = [
        "openssl", "req", "-x509", "-newkey", f"rsa:{RSA_BITS}", "-nodes", "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise BenchError(f"openssl could not make a certificate: {done.stderr.strip()[-200:]}")
    os.chmod(key, 0o600)
    return cert, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_text(port: int, cert: Path, key: Path) -> str:
    """ngircd.conf(5) for the bench: TLS only on 127.0.0.1:``port``, limits off."""
    return f"""\
[Global]
	Name = bench.invalid
	Info = socket-chat bench peer
	AdminInfo1 = socket-chat bench
	AdminInfo2 = 127.0.0.1
	AdminEMail = nobody@bench.invalid
	Listen = 127.0.0.1
	Ports =
	MotdPhrase = bench
[Limits]
	MaxConnections = 0
	MaxConnectionsIP = 0
	MaxJoins = 0
	MaxNickLength = 30
	MaxPenaltyTime = 0
	PingTimeout = 600
	PongTimeout = 600
[Options]
	DNS = no
	Ident = no
	PAM = no
	ConnectIPv6 = no
[SSL]
	CertFile = {cert}
	KeyFile = {key}
	Ports = {port}
"""


class IrcServer:
    """ngircd on 127.0.0.1 over TLS, its files in ``folder``; ``address``,
    ``pid`` and ``cert`` (for the clients to check it by) once started.

    Raises:
        IrcMissing: ngircd or openssl is not installed.
    """

    def __init__(self, folder: Path) -> None:
        why = missing()
        if why:
            raise IrcMissing(why)
        executable = find_ngircd()
        assert executable is not None  # missing() said it is there
        self.executable = executable
        self.folder = folder
        self.address = ("127.0.0.1", free_port())
        self.cert = folder / "cert.pem"
        self.process: subprocess.Popen | None = None
        self.log: list[str] = []
        self._context: ssl.SSLContext | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None  # started
        return self.process.pid

    def start(self) -> None:
        """Start it and wait until its log says it is ready.

        Raises:
            BenchError: it did not say so within TIMEOUT seconds.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        cert, key = make_certificate(self.folder)
        config = self.folder / "ngircd.conf"
        config.write_text(config_text(self.address[1], cert, key), encoding="utf-8")
        self.process = subprocess.Popen(
            [self.executable, "--nodaemon", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._context = self.context()
        ready = threading.Event()
        threading.Thread(target=self._read_log, args=(self.process.stdout, ready), daemon=True).start()
        if not ready.wait(TIMEOUT):
            self.stop()
            raise BenchError(f"ngircd did not start on port {self.address[1]}: {self.log[-5:]}")

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait until it has."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
        self.process = None

    def context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate only."""
        context = ssl.create_default_context(cafile=str(self.cert))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context

    def connection(self) -> IrcConnection:
        """A new client connection to it (each a full TLS handshake)."""
        assert self._context is not None  # started
        return IrcConnection(self._context)

    def __enter__(self) -> IrcServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _read_log(self, pipe, ready: threading.Event) -> None:
        for line in pipe:
            self.log.append(line.rstrip())
            if line.rstrip().endswith(READY):
                ready.set()
        pipe.close()


class IrcConnection:
    """One IRC client over TLS, sans-I/O, as the load generator drives a
    ``protocol.ClientConnection``: ``receive_data``, ``next_event``,
    ``send`` and ``data_to_send``."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname="127.0.0.1")
        self._events: collections.deque = collections.deque()
        self._lines = bytearray()
        self._handshaken = False
        self._unsent = ""  # written before the handshake was done
        self._closed = False
        self._nick = ""
        self._advance()  # the ClientHello

    def receive_data(self, data: bytes) -> None:
        """Bytes from the socket; ``b""`` for its end."""
        if self._closed:
            return
        if data:
            self._incoming.write(data)
            self._advance()
        else:
            self._close()

    def next_event(self):
        """The next event, or ``protocol.NEED_DATA``."""
        return self._events.popleft() if self._events else protocol.NEED_DATA

    def send(self, message: Message) -> None:
        """A ``Username`` registers and joins the channel; a ``ChatLine`` says it there."""
        if isinstance(message, Username):
            self._nick = message.name
            self._write(f"NICK {message.name}\r\nUSER {message.name} 0 * :{message.name}\r\nJOIN {CHANNEL}\r\n")
        elif isinstance(message, ChatLine):
            self._write(f"PRIVMSG {CHANNEL} :{message.text}\r\n")
        else:
            raise TypeError(f"an IRC client cannot send {type(message).__name__}")

    def data_to_send(self) -> bytes:
        return self._outgoing.read()

    def _write(self, text: str) -> None:
        if self._closed:
            return
        if self._handshaken:
            self._tls.write(text.encode())
        else:
            self._unsent += text  # TLS cannot carry it yet: sent once the handshake is done

    def _advance(self) -> None:
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
                self._events.append(UsernameRequest(""))
                if self._unsent:
                    self._write(self._unsent)
            while True:
                self._lines += self._tls.read(READ_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLZeroReturnError:
            self._close()
        except ssl.SSLError as exc:
            self._events.append(ErrorNotice(f"TLS: {exc.reason or exc}"))
            self._close()
        self._parse()

    def _parse(self) -> None:
        while (end := self._lines.find(b"\r\n")) >= 0:
            line = self._lines[:end].decode("utf-8", "replace")
            del self._lines[: end + 2]
            self._line(line)

    def _line(self, line: str) -> None:
        prefix, _, rest = line.partition(" ") if line.startswith(":") else ("", "", line)
        command, _, params = rest.partition(" ")
        if command == "PRIVMSG":
            target, _, text = params.partition(" :")
            if target == CHANNEL:
                self._events.append(ChatMessage(prefix[1:].split("!", 1)[0], text))
        elif command == "PING":
            self._write(f"PONG {params}\r\n")
        elif command == "366":  # RPL_ENDOFNAMES: in the channel, and told who else is
            self._events.append(Welcome(self._nick))
        elif command == "433":  # ERR_NICKNAMEINUSE: asked for another name, as ours asks
            self._events.append(UsernameRequest(params))
        elif command.isdigit() and int(command) in ERROR_NUMERICS:
            self._events.append(ErrorNotice(f"{command} {params}"))
        elif command == "ERROR":
            self._events.append(ErrorNotice(params))
            self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._events.append(protocol.ConnectionClosed(clean=False))
