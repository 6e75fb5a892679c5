"""The Markdown tables of the benchmark and experiment scripts: printed, and saved when asked."""

from __future__ import annotations

from pathlib import Path


def print_and_save(lines: list[str], out: str | Path | None = None) -> str:
    """Join ``lines`` with newlines, print the text and, when ``out`` is given, write it there
    (with a final newline). Returns the text."""
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return text
