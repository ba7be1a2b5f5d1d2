"""The documents name real things: every test SECURITY.md lists exists where
it says, and CI runs the README's own test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import module_map

ROOT = Path(__file__).parent.parent


def attack_test_rows() -> list[tuple[str, tuple[str, ...]]]:
    """(test name, the files its row names) for each test in SECURITY.md's
    attack table."""
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    table = text.split("## Attack tests", 1)[1]
    rows = []
    for line in table.splitlines():
        files = tuple(re.findall(r"`(tests/\w+\.py)`", line))
        rows += [(name, files) for name in re.findall(r"`(test_\w+)`", line)]
    return rows


def defines(file: str, name: str) -> bool:
    source = (ROOT / file).read_text(encoding="utf-8")
    return re.search(rf"^def {name}\(", source, re.M) is not None


@pytest.mark.parametrize(("name", "files"), attack_test_rows())
def test_security_md_names_a_test_that_exists(name, files):
    assert any(defines(file, name) for file in files), f"{name} is in none of {files}"


def test_security_md_lists_attack_tests():
    assert len(attack_test_rows()) >= 20


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```\n(.*?pytest.*?)\n```", readme)
    assert len(commands) == 1, "the README shows one test command"
    return commands[0]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_test_command() in ci.splitlines()


def test_the_module_map_in_architecture_md_is_up_to_date():
    """docs/architecture.md's map is made from the code: run
    ``python tools/module_map.py`` after adding, moving or describing a module."""
    text = module_map.DOC.read_text(encoding="utf-8")
    assert module_map.with_map(text) == text, "out of date: python tools/module_map.py"
