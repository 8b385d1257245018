"""Rows of the README's "Reliability" table, recorded by the fault, fuzz, security and overload checks.

A check calls `record(...)` after its assertions passed, so a row always describes something that
held. Rows go to the JSON-lines file named by CROSSMODAL_RELIABILITY_LOG (`make reliability` sets
it); without it, recording does nothing, and the plain test run is unchanged.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

LOG_ENV = "CROSSMODAL_RELIABILITY_LOG"
AREAS = ("faults", "input", "load", "security")


def record(area: str, case: str, tried: str, result: str) -> None:
    """Append one table row: the area, the case, what was tried (with its figures) and what held."""
    if area not in AREAS:
        raise ValueError(f"area must be one of {AREAS}, not {area!r}")
    target = os.environ.get(LOG_ENV)
    if not target:
        return
    row = {"area": area, "case": case, "tried": tried, "result": result, "date": datetime.date.today().isoformat()}
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(row, sort_keys=True) + "\n")
