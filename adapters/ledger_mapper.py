"""Maps titan ledger records to and from eventsourcing's stored events.

eventsourcing's default `Mapper` reads an event's `__dict__` and resolves its class from the
topic; titan's records are slotted and their topic is the record type (`order.accepted.v1`), so
this mapper does the whole conversion itself: stream id to originator id, version to originator
version, type to topic, and the sealed envelope to canonical JSON state bytes.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, Notification, StoredEvent, Transcoder

from commands.chain import CorruptRecord
from commands.ports import NewRecord, Record
from schemas.canonical import canonical_bytes, parse


class CanonicalJSONTranscoder(Transcoder):
    """Encodes documents as titan's canonical JSON (sorted keys, no whitespace)."""

    def encode(self, obj: Any) -> bytes:
        """Encode a JSON-ready document canonically."""
        return canonical_bytes(obj)

    def decode(self, data: bytes) -> Any:
        """Decode JSON bytes into plain Python values."""
        return parse(data)


class SealedRecord(NewRecord):
    """A record ready to store: its envelope carries `prev_hash` and `hash`, its position is
    still to be assigned by the database."""

    __slots__ = ()

    @property
    def originator_id(self) -> str:
        """The stream id, under eventsourcing's name."""
        return self.stream_id

    @property
    def originator_version(self) -> int:
        """The stream version, under eventsourcing's name."""
        return self.version


class LedgerRecord(Record):
    """A record read back from the ledger (a `Record` that eventsourcing also recognises)."""

    __slots__ = ()

    @property
    def originator_id(self) -> str:
        """The stream id, under eventsourcing's name."""
        return self.stream_id

    @property
    def originator_version(self) -> int:
        """The stream version, under eventsourcing's name."""
        return self.version


class TitanMapper(Mapper[str]):
    """Converts sealed titan records to stored events and notifications back to records."""

    def __init__(self) -> None:
        super().__init__(transcoder=CanonicalJSONTranscoder())

    def to_stored_event(self, domain_event: DomainEventProtocol[str]) -> StoredEvent:
        """Convert a sealed record to a stored event (topic = record type, state = envelope)."""
        if not isinstance(domain_event, SealedRecord):
            raise TypeError(
                f"the titan ledger stores sealed records only, not {type(domain_event).__name__}"
            )
        return StoredEvent(
            originator_id=domain_event.stream_id,
            originator_version=domain_event.version,
            topic=domain_event.type,
            state=self.transcoder.encode(domain_event.envelope),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> LedgerRecord:
        """Convert a notification (a stored event with its position) to a ledger record."""
        if not isinstance(stored_event, Notification):
            raise TypeError(
                "a ledger record needs its position: read it as a Notification "
                f"(stream {stored_event.originator_id!r} version {stored_event.originator_version})"
            )
        position = stored_event.id
        stream_id = str(stored_event.originator_id)
        version = stored_event.originator_version
        state: object = stored_event.state
        if isinstance(state, str):
            # Written as TEXT by some other tool: the bytes are what the hash covers.
            state = state.encode("utf-8")
        if not isinstance(state, bytes):
            raise CorruptRecord(position, stream_id, version, f"state is {type(state).__name__}")
        try:
            envelope = self.transcoder.decode(state)
        except ValueError as error:
            raise CorruptRecord(position, stream_id, version, str(error)) from error
        if not isinstance(envelope, dict):
            raise CorruptRecord(
                position, stream_id, version, f"state is a JSON {type(envelope).__name__}"
            )
        return LedgerRecord(
            position=position,
            stream_id=stream_id,
            version=version,
            type=stored_event.topic,
            envelope=envelope,
            state=state,
        )
