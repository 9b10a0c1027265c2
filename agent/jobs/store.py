"""Job records and event logs on disk, so that a restarted agent still serves them.

Each job has `<state>/jobs/<id>/record.json` (rewritten in place, recordfile.py) and `events.ndjson` (append
only, one event a line, `seq` from 1 without gaps). While the job runs its holder writes the log
(eventfile.py: one writer at a time, proven by the log's lock); the agent writes only before and
after, and learns of the holder's appends from the holder (`advanced`). A follower reads complete
lines from the file and then waits for the next append; because it resumes by `seq`, no line is
lost or repeated at the history/live handoff, across an agent restart too.

A follower reads the log in bounded steps (`READ_AT_MOST`) and yields complete lines as the reader
takes them (the HTTP layer waits while a client's socket is full): a slow reader of a large log
costs one step, not the log. When the agent is out of descriptors, an event that cannot be written
waits in memory, in order, and a record that cannot be saved is saved later; readers see them once
they are on disk. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from ..auth import Principal
from ..errors import Unavailable
from ..eventfile import LOG_NAME, EventFile, LogHeld
from ..fdlimit import QUIET, is_shortage, until_descriptors
from ..fs import remove_tree
from ..sandbox import libc
from . import recordfile
from .loglines import LogRange, last_seq, lines_after, lines_end, ranged_item, read_lines
from .shelf import Shelf, Summary
from .spare import RECORD_NAME, SpareFolders

R = TypeVar("R", bound=BaseModel)
RETRY_S = 0.2
SAVE_SOON_S = 1.0


class EventLog:
    def __init__(self, path: Path, new: bool = False) -> None:
        """`new`: the log of a record just added, empty or not there yet (nothing to read)."""
        self.path = path
        self.seq = 0
        self.closed = False
        self._ending = False
        self._changed = asyncio.Event()
        self._unwritten: list[dict[str, Any]] = []
        self._retry: asyncio.TimerHandle | None = None
        if not new and path.exists():
            try:
                self.seq = last_seq(path)
            except OSError as exc:
                if is_shortage(exc):
                    raise Unavailable("the agent is out of descriptors for a moment; retry") from None
                raise

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write an event of the agent's own; LogHeld while a holder owns the log (nothing kept)."""
        self._unwritten.append(event)
        try:
            self._write()
        except LogHeld:
            self._unwritten.pop()
            raise
        if event["type"] == "exit":
            self.close()  # at once, or once what waits is written
        return {"seq": self.seq + len(self._unwritten), **event}

    def advanced(self, seq: int) -> None:
        """The job's holder wrote up to `seq`: wake the followers."""
        if seq > self.seq:
            self.seq = seq
            self._wake()

    def _write(self) -> None:
        """Write what waits, in order; without a free descriptor, try again a moment later."""
        self._retry = None
        try:
            if self._unwritten:
                log = EventFile.open(str(self.path))
                try:
                    self.seq = log.append(self._unwritten)
                finally:
                    log.close()
                self._unwritten.clear()
        except OSError as exc:
            if not is_shortage(exc):
                raise
            QUIET.say("log-write", f"out of descriptors writing {self.path.name} of job "
                                   f"{self.path.parent.name}; {len(self._unwritten)} events wait in memory")
            self._retry = asyncio.get_running_loop().call_later(RETRY_S, self._write)
            return
        if self._ending:
            self.close()
        self._wake()

    def close(self) -> None:
        if self._unwritten:  # a job's end while its last events wait for a descriptor
            self._ending = True
            return
        self.closed = True
        self._wake()

    def discard(self) -> None:
        """The job is being deleted: what still waits to be written goes with it."""
        if self._retry is not None:
            self._retry.cancel()
        self._unwritten.clear()
        self.close()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, after: int = 0, follow: bool = True) -> AsyncIterator[dict[str, Any]]:
        """Every event with seq > after, then (if follow) new ones until the exit event."""
        async for chunk in self.follow_lines(after, follow):
            for line in bytes(chunk).splitlines():
                yield json.loads(line)

    async def follow_lines(self, after: int = 0, follow: bool = True,
                           ranges: bool = False) -> AsyncIterator[memoryview | LogRange]:
        """What `follow` yields, as the log's own bytes: complete lines, as many as one read holds.

        A line is read only as far as its seq and type, so relaying a large output costs no JSON
        work here and one event-loop turn per read, not per event; a chunk is a view of what was
        read, so the lines are not copied on their way to the HTTP layer.

        With `ranges`, once the lines are past `after`, the complete lines of a closed log (a
        finished job's history), where they are `RANGE_FROM` bytes or more, are yielded as a
        `LogRange` (an open descriptor, valid until the next item is asked for), for the HTTP layer
        to send without reading them into the agent (sendfile); so are a live log's from
        `LIVE_RANGE_FROM` bytes (a fast writer's: the pread and the socket's copy were a third of the
        agent's CPU in a live relay), smaller ones are read. Only the log's last bytes are read to find
        where its complete lines end; the stream ends where the log ends once it is closed."""
        try:
            offset, last = 0, after
            while True:
                waiter = self._changed
                try:
                    fd = await until_descriptors(lambda: os.open(self.path, os.O_RDONLY | os.O_CLOEXEC),
                                                 "reading an event log")
                except FileNotFoundError:
                    fd = -1
                if ranges and last > after and fd >= 0:
                    closed, whole = self.closed, True  # closed: taken before the size (a closed log's size is its end)
                    try:
                        end, ended = lines_end(fd, offset)
                        ranges = ended or not closed or end == offset  # else read on to its exit, not past it
                        if end > offset and ranges:
                            item, whole = ranged_item(fd, offset, end, RANGE_FROM if closed else LIVE_RANGE_FROM, READ_AT_MOST)
                            end, ended = (end, ended) if whole else (offset + len(item), False)
                            yield item
                    finally:
                        if ranges:
                            os.close(fd)
                    if ranges:
                        offset = end
                        if not whole:
                            continue  # the rest of what is there, a step at a time, without a wait
                        if closed or ended or not follow:
                            return
                        await waiter.wait()  # set by any append since it was taken, before the size
                        continue
                offset, data, end, more = (offset, b"", 0, False) if fd < 0 else read_lines(fd, offset, READ_AT_MOST)
                if end:
                    chunk, last, ended = lines_after(data, end, last)
                    if chunk:
                        yield chunk
                    if ended:
                        return
                if more:
                    continue
                if not follow or self.closed:
                    if self.closed and last < self.seq:
                        continue
                    return
                await waiter.wait()
        finally:
            HeapTrim.soon()


class HeapTrim:
    """A relay's steps (and the HTTP layer's frames of them) are large buffers that malloc keeps in
    its heap and reuses without a page fault; once a follower ends, the heap's free pages go back
    to the kernel a moment later (one trim for followers that end together), so a relay leaves an
    idle agent no larger than before."""

    AFTER_S = 1.0
    due: tuple[asyncio.AbstractEventLoop, float] | None = None

    @classmethod
    def soon(cls) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a follower closed after its loop (never in the agent)
            return
        if cls.due is not None and cls.due[0] is loop and cls.due[1] >= loop.time():
            return
        cls.due = (loop, loop.time() + cls.AFTER_S)
        loop.call_later(cls.AFTER_S, libc.return_free_heap)


READ_AT_MOST = 2 << 20  # a follower reads a long log in bounded steps: a slow reader holds about two
RANGE_FROM = READ_AT_MOST  # complete lines this many bytes or more go to the HTTP layer as a range, unread
LIVE_RANGE_FROM = 256 << 10  # ... of a live log (below it, a read: a range's own cost is more Python per step)


class RecordStore(Generic[R]):
    """Records (one pydantic model each, `<root>/<id>/record.json`) and their event logs.

    Where `shelves`, a finished record, once saved, leaves `records` for the compact `shelf` and its
    log's follower state goes (a follower of a finished log gets one of its own): what the agent
    keeps of the jobs nobody deletes stays small (shelf.py)."""

    record_type: type[R]
    shelves = False

    def __init__(self, root: Path, spares: SpareFolders | None = None) -> None:
        self.root = root
        self.spares = spares              # folders made ahead (a job's), or None: each made when needed
        self.records: dict[str, R] = {}   # as models: every record not shelved
        self.shelf: Shelf[R] = Shelf(self.record_type)
        self.logs: dict[str, EventLog] = {}
        self._unsaved: set[str] = set()
        self._retry: asyncio.TimerHandle | None = None

    def load(self) -> list[R]:
        """Read every record from disk (at start-up)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.root.iterdir()):
            record_file = entry / "record.json"
            if record_file.is_file():
                try:
                    record = self.record_type.model_validate_json(record_file.read_text())
                except ValueError:
                    record = self.recovered(entry)
                    if record is None:
                        continue
                self.records[record.id] = record  # type: ignore[attr-defined]
        found = list(self.records.values())
        for record in found:
            self._shelve(record)
        return found

    def recovered(self, folder: Path) -> R | None:
        """The record of `folder` from elsewhere, when its file cannot be read (None: nowhere)."""
        return None

    def dir(self, record_id: str) -> Path:
        return self.root / record_id

    def add(self, record: R) -> None:
        """A new record in a new folder (a spare renamed, where there is one), written in place:
        until it is there, nothing of its job exists that a restarted agent should find."""
        folder = self.dir(record.id)  # type: ignore[attr-defined]
        if self.spares is None or not self.spares.take(folder):
            folder.mkdir(mode=0o700)
        self.records[record.id] = record  # type: ignore[attr-defined]
        self.save(record, fresh=True)
        self.logs[record.id] = EventLog(folder / LOG_NAME, new=True)  # type: ignore[attr-defined]

    def save(self, record: R, fresh: bool = False) -> None:
        """Replace the record on disk; without a free descriptor, a moment later (the record in
        memory, which every call reads, is already the new one)."""
        try:
            self._unsaved.discard(record.id)  # type: ignore[attr-defined]
            self._write(record, fresh)
            self._shelve(record)
        except OSError as exc:
            if not is_shortage(exc):
                raise
            QUIET.say("record-save", f"out of descriptors saving record {record.id}; saved later")  # type: ignore[attr-defined]
            self._unsaved.add(record.id)  # type: ignore[attr-defined]
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(RETRY_S, self._save_later)

    def _save_later(self) -> None:
        self._retry = None
        self.save_pending()

    def save_pending(self) -> None:
        """Save now what waits to be saved (the agent stops)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for record_id in list(self._unsaved):
            self._unsaved.discard(record_id)
            record = self.records.get(record_id)
            if record is not None:
                self.save(record)

    def save_soon(self, record: R) -> None:
        """Replace the record on disk within `SAVE_SOON_S`, once for all changes till then: for
        changes the agent can do without across a crash (a session's cell count, which its
        holder also knows). Replacing a file costs milliseconds where the file system flushes a
        renamed file's data first (ext4's auto_da_alloc): not on a warm cell's path."""
        self._unsaved.add(record.id)  # type: ignore[attr-defined]
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(SAVE_SOON_S, self._save_later)

    def save_next(self, record: R) -> None:
        """Replace the record on disk right after what the event loop runs now: the followers that
        the event just logged woke go first (at once where no loop runs yet: the start-up)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self.save(record)
        self._unsaved.add(record.id)  # type: ignore[attr-defined]
        loop.call_soon(self._save_one, record.id)  # type: ignore[attr-defined]

    def _save_one(self, record_id: str) -> None:
        record = self.records.get(record_id)
        if record_id in self._unsaved and record is not None:  # not saved meanwhile, nor forgotten
            self.save(record)

    def _write(self, record: R, fresh: bool = False) -> None:
        """A `fresh` record (its first write, before its job exists) is written in place; a later
        one overwrites its block in place where it can, else replaces the file (recordfile.py)."""
        path = self.dir(record.id) / RECORD_NAME  # type: ignore[attr-defined]
        recordfile.write(path, self._data(record), fresh)

    def _data(self, record: R) -> bytes:
        """The record file's JSON."""
        return record.model_dump_json().encode()

    def _shelve(self, record: R) -> None:
        """A finished record that is saved goes to the shelf; its log's state, once all of it is
        written (a log still waiting for a descriptor stays until the agent drops it)."""
        if not self.shelves or not self.finished(record) or record.id in self._unsaved:  # type: ignore[attr-defined]
            return
        self.shelf.put(record)
        self.records.pop(record.id, None)  # type: ignore[attr-defined]
        self._shelved(record.id)  # type: ignore[attr-defined]
        log = self.logs.get(record.id)  # type: ignore[attr-defined]
        if log is not None and log.closed:
            del self.logs[record.id]  # type: ignore[attr-defined]

    def _shelved(self, record_id: str) -> None:
        """What a subclass keeps of a record until it is shelved (or forgotten) goes."""

    def finished(self, record: R) -> bool:
        raise NotImplementedError

    def get(self, record_id: str) -> R | None:
        """The record, as a model (a shelved one's is a new model each time)."""
        record = self.records.get(record_id)
        return record if record is not None else self.shelf.get(record_id)

    def summaries(self) -> list[Summary]:
        """Every record as quotas and retention see it."""
        held = [Summary(r, self.finished(r)) for r in self.records.values()]
        return held + list(self.shelf.entries.values())

    def kept_by(self, owner: str) -> tuple[int, int, int]:
        """(records, files, bytes of their /work copies) `owner` keeps: the shelf's tally and the
        records not shelved (running ones, a few just ended), without a walk of the shelf."""
        shelved = self.shelf.kept.get(owner)
        jobs, files, size = (shelved.jobs, shelved.files, shelved.bytes) if shelved is not None else (0, 0, 0)
        for record in self.records.values():
            if getattr(record, "owner") == owner:
                kept = getattr(record, "kept_work", None)
                jobs += 1
                if kept is not None:
                    files, size = files + kept.files, size + kept.bytes
        return jobs, files, size

    def visible_to(self, who: Principal) -> list[R]:
        """The caller's records, oldest first (an admin's: everyone's)."""
        mine = sorted((s for s in self.summaries() if who.is_admin or s.owner == who.id), key=lambda s: s.created_at)
        return [r for r in map(self.get, (s.id for s in mine)) if r is not None]

    def get_for(self, who: Principal, record_id: str) -> R | None:
        """The record if it exists and is the caller's (or the caller is an admin)."""
        record = self.records.get(record_id)
        if record is not None:
            return record if who.is_admin or record.owner == who.id else None  # type: ignore[attr-defined]
        entry = self.shelf.entries.get(record_id)
        return self.shelf.get(record_id) if entry is not None and (who.is_admin or entry.owner == who.id) else None

    def log(self, record_id: str) -> EventLog:
        """The record's log; a shelved record's is a closed one made for this caller, not kept."""
        if record_id not in self.logs:
            log = EventLog(self.dir(record_id) / LOG_NAME)
            if record_id in self.shelf:
                log.closed = True
                return log
            record = self.records.get(record_id)
            if record is not None and self.finished(record):
                log.closed = True
            self.logs[record_id] = log
        return self.logs[record_id]

    def forget(self, record_id: str) -> Path:
        """Drop a record and its log from memory; its folder, which the caller removes."""
        log = self.logs.pop(record_id, None)
        if log is not None:
            log.discard()
        self.records.pop(record_id, None)
        self.shelf.pop(record_id)
        self._unsaved.discard(record_id)
        self._shelved(record_id)
        return self.dir(record_id)

    def remove(self, record_id: str) -> None:
        remove_tree(str(self.forget(record_id)))
