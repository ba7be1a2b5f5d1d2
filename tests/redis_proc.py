"""A real redis-server for the cluster tests: on 127.0.0.1, on a free port,
with nothing saved to disk, started and stopped by the test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

TIMEOUT = 10.0  # seconds for redis-server to start or stop
READY = "Ready to accept connections"


def require_redis_server() -> str:
    """The path of redis-server. Without it the cluster tests are skipped,
    except in CI (CI=true), whose .ci/run installs it: there they fail."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (Debian: apt install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """redis-server on loopback. ``stop()`` and ``start()`` again keep the
    port, as a restarted Redis would; its data is not kept."""

    def __init__(self, directory: Path) -> None:
        self.executable = require_redis_server()
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it says it accepts connections."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        ready = threading.Event()
        lines: list[str] = []
        threading.Thread(target=self._read_log, args=(self.process.stdout, lines, ready), daemon=True).start()
        if not ready.wait(TIMEOUT):
            self.stop()
            raise AssertionError(f"redis-server did not start on port {self.port}: {lines}")

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

    @staticmethod
    def _read_log(pipe, lines: list[str], ready: threading.Event) -> None:
        for line in pipe:
            lines.append(line.rstrip())
            if READY in line:
                ready.set()
        pipe.close()
