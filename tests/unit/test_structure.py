"""The size rules hold (tests/structure.py), and the check does catch a breach."""

from __future__ import annotations

from pathlib import Path

from tests.structure import MAX_FUNCTION_LINES, MAX_MODULE_LINES, breaches


def test_no_module_or_function_over_its_limit() -> None:
    assert list(breaches()) == []


def test_the_check_sees_long_modules_and_functions(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    module = "def long():\n" + body + "\n" + "\n" * MAX_MODULE_LINES
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "big.py").write_text(module)
    found = list(breaches(tmp_path))
    assert any("api/big.py:" in f and "lines (at most 400)" in f for f in found), found
    assert any("long() has 81 lines" in f for f in found), found
