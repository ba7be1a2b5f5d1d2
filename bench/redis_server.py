"""A real redis-server for the cluster runs and the cluster tests: on
127.0.0.1, on a free port, with nothing saved to disk."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

from bench.loadgen import BenchError

TIMEOUT = 10.0  # seconds for redis-server to start or stop
READY = "Ready to accept connections"
NOT_INSTALLED = "redis-server is not installed (Debian: apt install redis-server)"


class RedisMissing(Exception):
    """redis-server is not installed."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """redis-server on loopback. ``stop()`` and ``start()`` again keep the
    port, as a restarted Redis would; its data is not kept.

    Raises:
        RedisMissing: no ``executable`` given and none on the PATH.
    """

    def __init__(self, directory: Path, executable: str | None = None) -> None:
        found = executable or shutil.which("redis-server")
        if found is None:
            raise RedisMissing(NOT_INSTALLED)
        self.executable: str = found
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it says it accepts connections.

        Raises:
            BenchError: it did not say so within TIMEOUT seconds.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        lines: list[str] = []
        threading.Thread(target=self._read_log, args=(self.process.stdout, lines, ready), daemon=True).start()
        if not ready.wait(TIMEOUT):
            self.stop()
            raise BenchError(f"redis-server did not start on port {self.port}: {lines}")

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

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @staticmethod
    def _read_log(pipe, lines: list[str], ready: threading.Event) -> None:
        for line in pipe:
            lines.append(line.rstrip())
            if READY in line:
                ready.set()
        pipe.close()
