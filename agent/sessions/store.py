"""Session records and event logs on disk (`<state>/sessions/<id>/`), as jobs keep theirs."""

from __future__ import annotations

from ..jobs.store import RecordStore
from .models import SessionRecord, SessionStatus


class SessionStore(RecordStore[SessionRecord]):
    record_type = SessionRecord

    def finished(self, record: SessionRecord) -> bool:
        return record.status == SessionStatus.ENDED
