"""Timestamps in the v3 format: ISO 8601, UTC, milliseconds, 'Z'."""
from datetime import UTC, datetime


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """A UTC moment in the v3 format."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
