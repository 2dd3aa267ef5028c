"""The README's configuration table is generated from the settings models; it must not drift."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))

from config_table import tables


def test_configuration_table_matches_the_settings_models() -> None:
    readme = (ROOT / "README.md").read_text()
    assert tables() in readme, "README.md is stale: paste `python hack/config_table.py` output"


def test_readme_shows_the_two_newcomer_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
