"""Every function of the API's code (server/ and service/) is at most 80 lines, so each reads on one screen:
a longer one is split into named steps (read_multipart, JobService.submit...). Read with ``ast``; a failure
names the function, its file and its length."""

from __future__ import annotations

import ast

from tests.server.helpers import REPO_ROOT

MAX_LINES = 80
FOLDERS = ("server", "service")


def _functions() -> list[tuple[str, int]]:
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO_ROOT / "src" / "stillmotion" / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    assert node.end_lineno is not None
                    where = f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}"
                    found.append((where, node.end_lineno - node.lineno + 1))
    return found


def test_every_server_function_is_at_most_80_lines() -> None:
    functions = _functions()
    assert len(functions) > 100  # the walk found the code
    assert [(where, lines) for where, lines in functions if lines > MAX_LINES] == []
