"""The figures of docs/reliability.md: with HYPERPEFT_RELIABILITY_FIGURES=FILE set, tests add what they tried to FILE
(`HYPERPEFT_RELIABILITY_FIGURES=reliability.json pytest tests/reliability`)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def record(section: str, **figures) -> None:
    """Merge `figures` into `section` of the figures file (nothing happens when no file is asked for)."""
    path = os.environ.get("HYPERPEFT_RELIABILITY_FIGURES")
    if not path:
        return
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(section, {}).update(figures)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
