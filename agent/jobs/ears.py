"""What an executor tells the JobService about one job's sandbox (cluster.executor.JobEvents),
turned into the job's record, its sink (log or session) and its end."""

from __future__ import annotations

from ..cluster.executor import Ending, Placement
from ..contract import JobStatus
from ..models import ClusterRef
from ..sandbox import status
from .livejob import Keeper, LiveJob


class SandboxEars:
    def __init__(self, service: Keeper, live: LiveJob) -> None:
        self.service, self.live = service, live

    @property
    def stored(self) -> bool:
        """A job's record is kept (and shown); a session's sandbox has none of its own."""
        return self.service.store.records.get(self.live.record.id) is self.live.record

    def output(self, stream: str, data: bytes) -> None:
        assert self.live.sink is not None
        self.live.sink.output(stream, data)

    def status(self, msg: status.Message) -> None:
        self.service.on_status(self.live, msg)

    def queued(self, message: str) -> None:
        """PENDING, with the scheduler's reason as the record's message and a status event."""
        record = self.live.record
        if record.status is not JobStatus.PENDING or record.message == message or not self.stored:
            return
        record.message = message
        self.service.store.save(record)
        self.service.store.log(record.id).append({"type": "status", "status": "PENDING", "message": message})

    def placed(self, placement: Placement) -> None:
        record = self.live.record
        record.node = placement.node
        record.cluster = ClusterRef(engine=placement.engine, job_id=placement.job_id, devices=placement.devices)
        if record.status is JobStatus.PENDING:
            record.message = None
        if self.stored:
            self.service.store.save(record)

    def ended(self, ending: Ending) -> None:
        self.service.on_ended(self.live, ending)
