"""The project installs as a program: pyproject.toml lists every top-level
module, its commands point at real ``main`` functions, its dependencies are
the requirements files', and (slow) ``pip install`` into a fresh venv gives
working ``socket-chat-server`` and ``socket-chat`` commands."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # requirements-dev.txt installs tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"socket-chat-server": "server:main", "socket-chat": "client:main"}
BIN = Path("venv", "bin")  # in the folder the slow tests install into


def pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def py_modules() -> list[str]:
    return pyproject()["tool"]["setuptools"]["py-modules"]


def requirements(name: str) -> list[str]:
    """The requirement lines of a requirements file, its ``-r`` includes
    left out (they are checked on their own)."""
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


def test_every_top_level_module_is_installed():
    missing = sorted({path.stem for path in ROOT.glob("*.py")} - set(py_modules()))
    assert not missing, f"add {missing} to py-modules in pyproject.toml"


def test_only_modules_are_installed_not_bench_or_tests():
    setuptools = pyproject()["tool"]["setuptools"]
    assert setuptools["packages"] == []
    assert not {"bench", "tests"} & set(py_modules())
    assert len(set(py_modules())) == len(py_modules())


def test_commands_point_at_main_functions():
    assert pyproject()["project"]["scripts"] == COMMANDS
    for target in COMMANDS.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_version_comes_from_cli():
    project = pyproject()
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cli.__version__"}


def test_dependencies_are_the_requirements_files():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    assert project["dependencies"] == requirements("requirements.txt")
    assert extras["cluster"] == requirements("requirements-cluster.txt")
    assert extras["dev"] == requirements("requirements-cluster.txt") + requirements("requirements-dev.txt")
    assert project["requires-python"] == ">=3.10"


# --- installed into a fresh venv (slow: builds, and fetches from PyPI) ------------


def cli_version(source: Path) -> str:
    """``__version__`` of cli.py, as setuptools reads it: a literal, not imported."""
    tree = ast.parse((source / "cli.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("cli.py has no __version__ = '...'")


def run(command: list[str], timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=clean_env(cwd), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def clean_env(home: Path) -> dict[str, str]:
    """This environment, without what would let the repository's modules in
    (or another venv's), and with a data directory of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["XDG_DATA_HOME"] = str(home / "data")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install`` of a copy of the repository (the build writes build/
    and *.egg-info next to the sources) into a fresh venv; the folder that
    holds both (the commands run there, away from the repository)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "socket-chat"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", ".hypothesis", ".pytest_cache", "build", "*.egg-info"
        ),
    )
    run([sys.executable, "-m", "venv", str(tmp / "venv")], 120, tmp)
    run([str(tmp / BIN / "python"), "-m", "pip", "install", "-q", str(source)], 420, tmp)
    return tmp


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_installed_command_help(installed, command):
    done = run([str(installed / BIN / command), "--help"], 30, installed)
    assert done.stdout.startswith("usage:"), done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_installed_command_version(installed, command):
    version = cli_version(ROOT)
    done = run([str(installed / BIN / command), "--version"], 30, installed)
    assert version in done.stdout, done.stdout
    assert done.stdout.startswith("socket-chat"), done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_installed_modules_import_and_version(installed):
    """Every listed module is there (a listed but missing one is skipped by
    setuptools without an error), bench and tests are not, and the
    distribution's version is cli.py's."""
    script = (
        "import importlib, importlib.metadata, importlib.util, sys\n"
        f"for name in {py_modules()!r}: importlib.import_module(name)\n"
        "assert importlib.util.find_spec('bench') is None and importlib.util.find_spec('tests') is None\n"
        "print(importlib.metadata.version('socket-chat'))\n"
    )
    done = run([str(installed / BIN / "python"), "-c", script], 60, installed)
    assert done.stdout.strip() == cli_version(ROOT)
