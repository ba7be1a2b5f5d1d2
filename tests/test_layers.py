"""The package's layers, read off its folders: each imports only the layers
below it, and the two programs do not import each other.

    crypto  <  protocol  <  chat  <  cli, transport, tty  <  server | client

An import inside a function or under ``TYPE_CHECKING`` counts too: it is
the same dependency, taken later. The rule and the reading of imports are
tools/module_map.py's, which also draws the map in docs/architecture.md.
"""

from __future__ import annotations

import pytest

from tools.module_map import LAYERS, PACKAGE, module_name, part_of, upward_imports

SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer():
    assert {part_of(module_name(path)) for path in SOURCES} == set(LAYERS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_only_from_below(path):
    part = part_of(module_name(path))
    wrong = ", ".join(upward_imports(path))
    assert not wrong, f"{path.relative_to(PACKAGE)} ({part or 'socket_chat'}, layer {LAYERS[part]}) imports {wrong}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The rule itself: a chat module that imports the server is caught,
    one that imports the protocol is not."""
    fake = tmp_path / "socket_chat"
    for folder in ("chat", "server", "protocol"):
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text("")
    (fake / "server" / "app.py").write_text("")
    rules = fake / "chat" / "rules.py"
    rules.write_text(
        "from socket_chat.protocol import Notice\n\n\ndef later():\n    from socket_chat.server import app\n"
    )
    assert upward_imports(rules, fake) == [
        "socket_chat.server (server, layer 5)",
        "socket_chat.server.app (server, layer 5)",
    ]


def test_the_top_level_faces_re_export_the_packages_api():
    """protocol.py and crypto_utils.py: every public name, as the old modules had them."""
    import crypto_utils
    import protocol
    from socket_chat import crypto
    from socket_chat import protocol as package

    for face, inner, more in [
        (protocol, package, ["may_be_server_greeting"]),
        (crypto_utils, crypto, ["RSA", "MAX_SEQUENCE"]),
    ]:
        for name in [*inner.__all__, *more]:
            assert getattr(face, name) is getattr(inner, name), f"{face.__name__}.{name}"
