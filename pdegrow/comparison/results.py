"""A study run's ``result.json``: its name and reader (shared by the runner, which writes it, and
the tables, which read it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The result of the run in ``run_dir``, or None when it has none yet (or a damaged one)."""
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
