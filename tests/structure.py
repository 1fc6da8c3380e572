"""The size rules of the product packages: no module over 400 lines, no
function over 80 (Alembic migrations excepted from the function rule: an
``upgrade()`` is one declarative list of table definitions).
``python -m tests.structure`` (run by ``make lint``) prints every breach and
exits 1; ``tests/unit/test_structure.py`` asserts there is none."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "api", "workers", "assistant", "ingest", "retrieval", "llm", "traces",
            "sirocco")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def breaches(root: Path = REPO) -> Iterator[str]:
    """One line per module or function over its limit."""
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            where = path.relative_to(root)
            lines = text.count("\n") + (not text.endswith("\n") and bool(text))
            if lines > MAX_MODULE_LINES:
                yield f"{where}: {lines} lines (at most {MAX_MODULE_LINES})"
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(text, filename=str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        yield (f"{where}:{node.lineno}: {node.name}() has {length} lines "
                               f"(at most {MAX_FUNCTION_LINES})")


def main() -> int:
    found = list(breaches())
    for line in found:
        print(line)
    print(f"{len(found)} breach(es) of the size rules" if found else "size rules: ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
