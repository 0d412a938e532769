"""docs/models.md's per-machine memory tables are the planner's current answers, not a stale copy."""

from __future__ import annotations

from pathlib import Path

from stillmotion.bench.memory_table import BEGIN, END, tables

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def test_the_models_doc_holds_the_planners_tables() -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == tables(), "regenerate: python -m stillmotion.bench.memory_table"


def test_the_tables_say_which_memory_is_short() -> None:
    out = tables()
    # The case: Wan 2.1 14B on a 12 GiB card is refused for host memory at 16 GiB, runs at 64 GiB.
    row = next(line for line in out.splitlines() if line.startswith("| 12 GiB") and "pins on the fly" in line)
    assert row.split(" | ")[1].startswith("no: host")
    assert "no: GPU" in out and "resident" in out
