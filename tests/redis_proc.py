"""A real redis-server for the cluster tests: the benchmark's
``bench.redis_server.RedisServer``, skipped without redis-server (failed in CI)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.redis_server import NOT_INSTALLED, free_port  # noqa: F401 (free_port: for the tests)
from bench.redis_server import RedisServer as _RedisServer


def require_redis_server() -> str:
    """The path of redis-server. Without it the cluster tests are skipped,
    except in CI (CI=true), whose .ci/run installs it: there they fail."""
    path = shutil.which("redis-server")
    if path is None:
        skip_or_fail(NOT_INSTALLED)
    return path


def skip_or_fail(message: str) -> None:
    """Skip the test, or fail it in CI (CI set), where nothing may be missing."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class RedisServer(_RedisServer):
    """redis-server on loopback (see bench.redis_server); the test is skipped
    without it, except in CI."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, require_redis_server())
