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


class Kept:
    """What one owner keeps on a shelf: records, and the files and bytes of their /work copies."""

    __slots__ = ("jobs", "files", "bytes")

    def __init__(self) -> None:
        self.jobs = self.files = self.bytes = 0

    def count(self, entry: Summary, sign: int) -> None:
        self.jobs += sign
        self.files += sign * entry.kept_files
        self.bytes += sign * entry.kept_bytes


class Shelf(Generic[R]):
    """Finished records by id, compact; each `get` is a new model (a finished record is never
    changed in place, so nothing is lost by handing out copies). `kept` tallies each owner's
    entries as they come and go: a job's quota check reads its owner's tally, where it walked
    every record kept (hundreds of summaries made per POST on an agent that keeps many)."""

    def __init__(self, record_type: type[R]) -> None:
        self.record_type = record_type
        self.entries: dict[str, Summary] = {}
        self.kept: dict[str, Kept] = {}

    def put(self, record: R) -> None:
        data = record.model_dump_json(exclude_defaults=True).encode()
        entry = Summary(record, True, data)
        self.pop(entry.id)  # shelved again (a record settled twice): counted once
        self.entries[entry.id] = entry
        self.kept.setdefault(entry.owner, Kept()).count(entry, 1)

    def get(self, record_id: str) -> R | None:
        entry = self.entries.get(record_id)
        return None if entry is None else self.record_type.model_validate_json(entry.data)

    def pop(self, record_id: str) -> None:
        entry = self.entries.pop(record_id, None)
        if entry is not None:
            kept = self.kept[entry.owner]
            kept.count(entry, -1)
            if not kept.jobs:
                del self.kept[entry.owner]

    def __contains__(self, record_id: object) -> bool:
        return record_id in self.entries
