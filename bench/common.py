"""What the per-service benchmark scripts share: their results go to ``bench/RESULTS.md``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def table(header: Sequence[str], *rows: Sequence[object]) -> str:
    """A Markdown table: ``header``, then one line per row."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(map(str, cells)) + " |\n"

    return line(header) + "|" + "---|" * len(header) + "\n" + "".join(map(line, rows))


def report(title: str, body: str, *, write: bool) -> None:
    """Print a results section (a heading with ``title`` and the time, then ``body``) and, if
    ``write``, append it to ``bench/RESULTS.md``."""
    text = f"\n## {title} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n{body}"
    print(text)
    if write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(text)
