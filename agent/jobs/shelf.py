"""Finished records, kept compact: what the agent asks of every record (owner, times, kept /work)
as plain fields, the rest as the record's JSON without its defaults, read back when a call wants
the record.

A finished job never changes, yet nobody need delete it: goals.py's sections leave about 600. As
pydantic models with its log's follower state, one cost the agent 5.2 KB of heap and 16 objects
the garbage collector walks; shelved, about 1 KB and one (tests/test_kept_jobs.py measures it).
"""

from __future__ import annotations

import sys
from typing import Generic, TypeVar

from pydantic import BaseModel

R = TypeVar("R", bound=BaseModel)


class Summary:
    """A record as quotas, retention and listings see it; a shelved one carries its record's JSON."""

    __slots__ = ("id", "owner", "finished", "created_at", "ended_at", "kept_files", "kept_bytes", "data")

    def __init__(self, record: BaseModel, finished: bool, data: bytes = b"") -> None:
        kept = getattr(record, "kept_work", None)
        self.id: str = getattr(record, "id")
        self.owner: str = sys.intern(getattr(record, "owner"))  # one string for all of an owner's records
        self.finished = finished
        self.created_at: float = getattr(record, "created_at")
        self.ended_at: float | None = getattr(record, "ended_at", None)
        self.kept_files: int = kept.files if kept is not None else 0
        self.kept_bytes: int = kept.bytes if kept is not None else 0
        self.data = data


class Shelf(Generic[R]):
    """Finished records by id, compact; each `get` is a new model (a finished record is never
    changed in place, so nothing is lost by handing out copies)."""

    def __init__(self, record_type: type[R]) -> None:
        self.record_type = record_type
        self.entries: dict[str, Summary] = {}

    def put(self, record: R) -> None:
        data = record.model_dump_json(exclude_defaults=True).encode()
        entry = Summary(record, True, data)
        self.entries[entry.id] = entry

    def get(self, record_id: str) -> R | None:
        entry = self.entries.get(record_id)
        return None if entry is None else self.record_type.model_validate_json(entry.data)

    def pop(self, record_id: str) -> None:
        self.entries.pop(record_id, None)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self.entries
