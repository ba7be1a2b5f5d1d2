"""The package's layers, read off its folders: each imports only the layers
below it, and the two programs do not import each other.

    crypto  <  protocol  <  chat  <  cli, transport, tty  <  server | client

An import inside a function or under ``TYPE_CHECKING`` counts too: it is
the same dependency, taken later.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "socket_chat"

#: Each part of the package (a folder, or a module at its top) and its
#: layer: a part may import from a lower layer and from itself, never from
#: its own layer's other parts or from above.
LAYERS = {
    "": 0,  # socket_chat/__init__.py: the version, and nothing else
    "crypto": 1,
    "protocol": 2,
    "chat": 3,
    "cli": 4,
    "transport": 4,
    "tty": 4,
    "server": 5,
    "client": 5,
}


def part_of(module: str) -> str:
    """The part of ``socket_chat.a.b`` (``a``), or "" for the package itself."""
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    names = list(relative.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def imported_modules(path: Path) -> set[str]:
    """The socket_chat modules that ``path`` imports, wherever in the file."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}"))
    return {name for name in found if name == "socket_chat" or name.startswith("socket_chat.")}


def is_module(name: str) -> bool:
    """Whether ``a.b.c`` is a module or package (not a name inside one)."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def upward_imports(path: Path) -> list[str]:
    here = part_of(module_name(path))
    wrong = []
    for imported in sorted(imported_modules(path)):
        there = part_of(imported)
        if there == here or (imported == "socket_chat" and here != ""):
            continue  # its own part; or `from socket_chat import X`, judged by X
        if there not in LAYERS:
            wrong.append(f"{imported}: not a part of the package")
        elif LAYERS[there] >= LAYERS[here]:
            wrong.append(f"{imported} ({there or 'socket_chat'}, layer {LAYERS[there]})")
    return wrong


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer():
    assert {part_of(module_name(path)) for path in SOURCES} == set(LAYERS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_only_from_below(path):
    here = part_of(module_name(path))
    wrong = upward_imports(path)
    assert not wrong, (
        f"{path.relative_to(PACKAGE)} ({here or 'socket_chat'}, layer {LAYERS[here]}) imports " + ", ".join(wrong)
    )


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule itself: a chat module that imports the server is caught."""
    fake = tmp_path / "socket_chat"
    (fake / "chat").mkdir(parents=True)
    module = fake / "chat" / "rules.py"
    (fake / "server").mkdir()
    (fake / "server" / "app.py").write_text("")
    module.write_text("from socket_chat.server import app\nfrom socket_chat.protocol import Notice\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports(module) == [
        "socket_chat.server (server, layer 5)",
        "socket_chat.server.app (server, layer 5)",
    ]
