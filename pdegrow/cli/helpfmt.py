"""The ``--help`` layout of every subcommand: prose wrapped to the terminal, example lines kept."""

from __future__ import annotations

import argparse
import textwrap


class ExampleHelpFormatter(argparse.HelpFormatter):
    """Wrap each line of a description or epilog as a paragraph, except lines that start with a
    space (commands in an ``examples:`` block), which are printed exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if line.startswith(" ") or not line.strip():
                lines.append(indent + line)
            else:
                lines.append(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent))
        return "\n".join(lines)
