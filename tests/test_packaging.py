"""The project installs as one package and two programs: the wheel holds the
import name ``socket_chat`` and nothing else at the top level, its commands
point at real ``main`` functions, its dependencies are the requirements
files', and (slow) ``pip install`` into a fresh venv that already holds
PyPI's ``limits``, ``names`` and ``x25519`` gives working commands."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # requirements-dev.txt installs tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "socket-chat-server": "socket_chat.server.command_line:main",
    "socket-chat": "socket_chat.client.__main__:main",
}
#: Distributions on PyPI whose import names the flat layout used to shadow
#: (or be shadowed by): installed first, they must not break the chat.
NAMESAKES = ["limits==5.8.0", "names==0.3.0", "x25519==0.0.2"]
BIN = Path("venv", "bin")  # in the folder the slow tests install into


def pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def requirements(name: str) -> list[str]:
    """The requirement lines of a requirements file, its ``-r`` includes
    left out (they are checked on their own)."""
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


def test_only_the_package_is_installed():
    setuptools = pyproject()["tool"]["setuptools"]
    assert "py-modules" not in setuptools
    assert setuptools["packages"]["find"]["include"] == ["socket_chat", "socket_chat.*"]


def test_every_folder_of_the_package_is_a_package():
    """setuptools' find leaves out a folder without ``__init__.py``."""
    for folder in (ROOT / "socket_chat").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__":
            assert (folder / "__init__.py").exists(), folder


def test_commands_point_at_main_functions():
    assert pyproject()["project"]["scripts"] == COMMANDS
    for target in COMMANDS.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_version_is_the_packages():
    project = pyproject()
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "socket_chat.__version__"}


def test_dependencies_are_the_requirements_files():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    assert project["dependencies"] == requirements("requirements.txt")
    assert extras["cluster"] == requirements("requirements-cluster.txt")
    assert extras["dev"] == requirements("requirements-cluster.txt") + requirements("requirements-dev.txt")
    assert project["requires-python"] == ">=3.10"


# --- installed into a fresh venv (slow: builds, and fetches from PyPI) ------------


def package_version(source: Path) -> str:
    """``__version__`` of socket_chat/__init__.py, as setuptools reads it: a
    literal, not imported."""
    tree = ast.parse((source / "socket_chat" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("socket_chat/__init__.py has no __version__ = '...'")


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
    run([str(tmp / BIN / "python"), "-m", "pip", "install", "-q", *NAMESAKES], 300, tmp)
    run([str(tmp / BIN / "python"), "-m", "pip", "install", "-q", str(source)], 420, tmp)
    run(
        [str(tmp / BIN / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "wheel"), str(source)],
        420,
        tmp,
    )
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
    version = package_version(ROOT)
    done = run([str(installed / BIN / command), "--version"], 30, installed)
    assert version in done.stdout, done.stdout
    assert done.stdout.startswith("socket-chat"), done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_installs_one_name(installed):
    """Top level: the package, and the distribution's metadata."""
    (wheel,) = (installed / "wheel").glob("socket_chat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert top == {"socket_chat", f"socket_chat-{package_version(ROOT)}.dist-info"}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("side", ["server", "client"])
def test_installed_package_runs_as_a_module(installed, side):
    done = run([str(installed / BIN / "python"), "-m", f"socket_chat.{side}", "--version"], 30, installed)
    assert package_version(ROOT) in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_installed_beside_its_namesakes(installed):
    """PyPI's limits, names and x25519 still import as themselves, the
    distribution's version is the package's, and bench and tests are not
    installed."""
    script = (
        "import importlib.metadata, importlib.util, limits, names, x25519\n"
        "assert not hasattr(limits, 'Limits'), limits\n"
        "assert importlib.util.find_spec('bench') is None and importlib.util.find_spec('tests') is None\n"
        "print(importlib.metadata.version('socket-chat'))\n"
    )
    done = run([str(installed / BIN / "python"), "-c", script], 60, installed)
    assert done.stdout.strip() == package_version(ROOT)
