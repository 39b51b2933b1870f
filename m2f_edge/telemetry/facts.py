"""A platform fact is a plain dict so it goes into JSON as is: the value and where it came from."""

from __future__ import annotations

from typing import Any, Dict, Optional


def fact(value: Any, source: str, note: Optional[str] = None) -> Dict[str, Any]:
    """A reading: ``{"value": value, "source": source}`` (+ ``"note"``). value None = not available."""
    entry = {"value": value, "source": source}
    if note:
        entry["note"] = note
    return entry


def missing(source: str, why: str) -> Dict[str, Any]:
    return {"value": None, "source": source, "note": why}


def value_of(entry: Any, default: Any = None) -> Any:
    if isinstance(entry, dict) and "value" in entry:
        return entry["value"] if entry["value"] is not None else default
    return default
