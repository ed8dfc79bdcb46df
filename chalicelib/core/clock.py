"""Timestamps in the v3 format: ISO 8601, UTC, milliseconds, 'Z'."""
from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
