"""docs/api.md is generated from the docstrings (docs/make_api.py) and documents every public name."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

import pdegrow


def test_api_page_is_the_generated_one():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "make_api.py")], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    assert (ROOT / "docs" / "api.md").read_text() == proc.stdout, \
        "docs/api.md is stale: run 'python docs/make_api.py > docs/api.md'"


def test_every_public_name_is_documented():
    page = (ROOT / "docs" / "api.md").read_text()
    for name in pdegrow.__all__:
        if name != "__version__":
            assert f"pdegrow.{name}" in page, name
