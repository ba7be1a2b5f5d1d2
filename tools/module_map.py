"""The map of the package's modules, made from the code itself: each
module's first docstring sentence and what it imports of the package, one
table per layer. docs/architecture.md holds it between two markers;
tests/test_docs.py checks that it is up to date, and so this is the one
place the map is kept.

Usage::

    python tools/module_map.py            # rewrite the map in docs/architecture.md
    python tools/module_map.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "socket_chat"
DOC = ROOT / "docs" / "architecture.md"
BEGIN = "<!-- module map: made by tools/module_map.py from the docstrings; do not edit by hand -->"
END = "<!-- end of the module map -->"

#: The package's parts (a folder, or a module at its top) by layer, lowest
#: first: a part may import from a lower layer and from itself only
#: (tests/test_layers.py holds the package to it).
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


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``socket_chat.chat.room`` for socket_chat/chat/room.py."""
    names = list(path.relative_to(package.parent).with_suffix("").parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def part_of(module: str) -> str:
    """The part of ``socket_chat.a.b`` (``a``), or "" for the package itself."""
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


def is_module(name: str, package: Path = PACKAGE) -> bool:
    """Whether ``a.b.c`` is a module or package (not a name inside one)."""
    path = package.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imported_modules(path: Path, package: Path = PACKAGE) -> set[str]:
    """The package's modules that ``path`` imports, wherever in the file
    (in a function, or under TYPE_CHECKING: the same dependency, taken later)."""
    here = module_name(path, package)
    parent = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parent.split(".")[: len(parent.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}", package))
    top = package.name
    return {name for name in found if name == top or name.startswith(top + ".")}


def upward_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    """What ``path`` imports against the layers, each with why."""
    here = part_of(module_name(path, package))
    wrong = []
    for imported in sorted(imported_modules(path, package)):
        there = part_of(imported)
        if there == here or (imported == package.name and here != ""):
            continue  # its own part; or `from socket_chat import X`, judged by X
        if there not in LAYERS:
            wrong.append(f"{imported}: not a part of the package")
        elif LAYERS[there] >= LAYERS[here]:
            wrong.append(f"{imported} ({there or package.name}, layer {LAYERS[there]})")
    return wrong


def summary(path: Path) -> str:
    """The first sentence of the module's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    sentence = re.split(r"(?<=[.:;])\s+(?=[A-Z`(])", paragraph)[0]
    return sentence.rstrip(":").replace("|", "\\|")


def imports_cell(path: Path) -> str:
    names = sorted(imported_modules(path) - {"socket_chat"})
    # `socket_chat.chat` when `socket_chat.chat.names` is there too says nothing more
    names = [name for name in names if not any(other.startswith(name + ".") for other in names)]
    return ", ".join(f"`{name.removeprefix('socket_chat.')}`" for name in names) or "nothing of the package"


def sources(part: str) -> list[Path]:
    folder = PACKAGE / part
    if part and folder.is_dir():
        return sorted(folder.glob("*.py"), key=lambda p: (p.name != "__init__.py", p.name))
    return [PACKAGE / f"{part}.py"] if part else [PACKAGE / "__init__.py"]


def module_map() -> str:
    lines = [BEGIN, ""]
    for layer in sorted(set(LAYERS.values())):
        parts = [part for part, rank in LAYERS.items() if rank == layer]
        title = ", ".join(f"`{part}`" if part else "`socket_chat`" for part in parts)
        lines += [f"### Layer {layer}: {title}", "", "| module | what it holds | imports of the package |"]
        lines.append("|---|---|---|")
        for part in parts:
            for path in sources(part):
                shown = path.relative_to(PACKAGE.parent).as_posix()
                lines.append(f"| `{shown}` | {summary(path)} | {imports_cell(path)} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def with_map(text: str) -> str:
    """``text`` (docs/architecture.md) with its map made anew."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + module_map() + text[end:]


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    fresh = with_map(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{DOC.relative_to(ROOT)}: the module map is out of date: run tools/module_map.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
