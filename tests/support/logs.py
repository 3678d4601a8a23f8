"""The JSON log lines of a process started by the test harness (``tests/harness.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects logged to ``path``, one a line, in order; other lines are skipped (none
    while the file does not exist)."""
    found = []
    for raw in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            found.append(line)
    return found
