"""docs/compatibility.md must state exactly the versions the handler registry serves."""

from __future__ import annotations

import re
from pathlib import Path

from nerve.handlers import load_handlers

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.strip().partition("-")
    return int(lo), int(hi or lo)


def test_table_matches_registry() -> None:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|\s*(\w+)\s*\|\s*([\d-]+)\s*\|\s*([\d-]+)\s*\|", line)
        if m:
            rows[int(m[1])] = (m[2], _range(m[3]), _range(m[4]))
    registry = load_handlers()
    assert set(rows) == set(registry), "every registered API has exactly one row"
    for key, spec in registry.items():
        name, advertised, accepted = rows[key]
        assert name == spec.name
        assert advertised == (spec.advertised_min, spec.max_version), name
        assert accepted == (spec.min_version, spec.max_version), name
