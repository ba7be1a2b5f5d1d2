"""Child processes for tests: the real server.py and client.py, each with its
output read by threads into queues, so every wait has a timeout and no test
can hang on a pipe."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = Path(__file__).resolve().parent / "keys"
TIMEOUT = 10.0  # seconds any single expected line may take


class Stream:
    """One output pipe of a child: every line, as it arrives, and a queue of
    the lines not yet waited for."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for raw in pipe:
            line = raw.rstrip("\r\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)  # EOF
        pipe.close()

    def expect(self, wanted, timeout: float = TIMEOUT) -> str:
        """The next line equal to ``wanted`` (a str) or matching it (a regex);
        other lines before it are skipped. AssertionError on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {wanted!r} within {timeout} s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"EOF before a line {wanted!r}; got {self.lines}")
            if _matches(line, wanted):
                return line

    def text(self, timeout: float = TIMEOUT) -> str:
        """Everything, once the pipe is closed (call after the process ended)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "output pipe still open"
        return "".join(line + "\n" for line in self.lines)


def _matches(line: str, wanted) -> bool:
    return line == wanted if isinstance(wanted, str) else wanted.search(line) is not None


def server_py_stops(data_home: Path, *args: str, status: int = 1) -> str:
    """Run ``server.py`` on 127.0.0.1 and a free port with ``args``, which
    must stop it at start with exit ``status`` and no traceback; its stderr."""
    server = Proc(["server.py", "--host", "127.0.0.1", "--port", "0", *args], data_home)
    try:
        assert server.wait() == status
        err = server.stderr.text()
        assert "Traceback" not in err
        return err
    finally:
        server.kill()


class Proc:
    """A child Python process with stdin a pipe and stdout/stderr read by threads."""

    def __init__(self, args: list[str], data_home: Path, sigint_ignored: bool = False) -> None:
        # XDG_CONFIG_HOME too: the person's own client.conf must not change a test.
        config_home = str(data_home / "config")
        env = dict(os.environ, XDG_DATA_HOME=str(data_home), XDG_CONFIG_HOME=config_home, PYTHONIOENCODING="utf-8")
        with _sigint_for_child(sigint_ignored):
            self.popen = subprocess.Popen(
                [sys.executable, "-u", *args],
                cwd=ROOT,
                env=env,
                text=True,
                encoding="utf-8",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        self.stdout = Stream(self.popen.stdout)
        self.stderr = Stream(self.popen.stderr)
        self.port: int | None = None  # set for a server once it listens

    def send(self, line: str) -> None:
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.stdin.close()

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.popen.wait(timeout)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def kill(self) -> None:
        """End the child (if still running) and close its pipes; for ``finally``."""
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(TIMEOUT)
        self.close_stdin()


@contextlib.contextmanager
def _sigint_for_child(ignored: bool):
    """Set the SIGINT disposition the child inherits. Ignored is how a shell
    script starts a background job; otherwise the child gets the default
    (even if this process itself was started with SIGINT ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.getsignal(signal.SIGINT)
    if saved is None:  # set outside Python: leave it alone
        yield
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def private_key_copy(directory: Path, name: str = "test-only-server-key.pem") -> Path:
    """A copy of a committed test key with mode 0600, as the server demands."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    shutil.copyfile(KEYS / name, path)
    path.chmod(0o600)
    return path


LISTENING = re.compile(r"^Listening at 127\.0\.0\.1:(\d+)$")


def start_server(tmp_path: Path, *options: str) -> Proc:
    """server.py on 127.0.0.1 and a free port (its ``port`` attribute).
    With --log-messages: the tests wait for the log of a line to know it
    was relayed."""
    key = private_key_copy(tmp_path / "server-key")
    args = ["server.py", "--key", str(key), "--host", "127.0.0.1", "--port", "0", "--log-messages", *options]
    proc = Proc(args, tmp_path / "server-data")
    try:
        proc.port = int(LISTENING.search(proc.stdout.expect(LISTENING)).group(1))
    except BaseException:
        proc.kill()
        raise
    return proc


def start_client(tmp_path: Path, port: int, label: str, *options: str, sigint_ignored: bool = False) -> Proc:
    """client.py for 127.0.0.1:``port`` with its own XDG_DATA_HOME (``label``)."""
    args = ["client.py", "--host", "127.0.0.1", "--port", str(port), *options]
    return Proc(args, tmp_path / f"data-{label}", sigint_ignored)
