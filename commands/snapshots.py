"""Account snapshots beside the ledger (issue 14, item 3): the port, the trust rule, and where a
reader of an account starts.

A snapshot is one account's state at one version of its stream, written by the core's codec
(`core.snapshot.state_to_snapshot`, canonical JSON), with the ledger position and chain hash of
the record at that version and the `set_by` references explain needs (the last record of each
context-setting type up to it). Snapshots live outside the hash chain: they are a cache of a fold,
never evidence. So none is ever used blindly: `trusted()` (the one trust rule, used by the writer,
`titan state`, `replay --until`, `explain` and `replay verify`) accepts a snapshot only when its
format is the running core's, its bytes have their SHA-256, the ledger record at its position is
its stream's record at its version with its chain hash, its state decodes for that account, and
every `set_by` reference names the record it copies (the policy one the activation of the state's
policy). A snapshot that fails is skipped, logged and counted, and the next older one tried, else
the fold from zero. `titan replay verify` proves that each stored snapshot equals the fold.

What the rule cannot prove without folding: that a snapshot's state is the fold of the stream up
to its version (someone who can write the table can store a state that decodes and a SHA-256 of
it). That is what `titan replay verify` checks, for every snapshot; a reader that starts from one
says so (`used_note`), and its `--no-snapshots` folds from zero.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from schemas.canonical import canonical_bytes, document_hash, sha256_hex

from .envelope import ACCOUNT_PREFIX, account_stream
from .ports import Ledger, LedgerError, Record

DEFAULT_SNAPSHOT_EVERY: Final = 1000
"""Account events between two snapshots a writer takes (0: none)."""
DEFAULT_SNAPSHOT_KEEP: Final = 8
"""Snapshots a writer keeps of its account, the newest (0: all). A state grows with what it
remembers (under rules version 2 every fill id ever counted), so keeping every snapshot would
grow the store with the square of the stream's length."""
MAX_UNTRUSTED: Final = 16
"""Untrusted snapshots a reader steps over before it folds from zero instead: a table filled with
junk costs a bounded number of look-ups."""
POLICY_ACTIVATED: Final = "policy.activated.v1"

# Event types of the order flow itself; every other account event type sets context (the
# breaker, the truth score, the policy …), and a decision trace lists the last of each kind.
ORDER_FLOW_TYPES: Final = frozenset(
    {
        "order.accepted.v1",
        "order.rejected.v1",
        "order.acknowledged.v1",
        "order.filled.v1",
        "order.cancel_requested.v1",
        "order.cancelled.v1",
        "order.venue_rejected.v1",
        "command.rejected.v1",
    }
)
REF_FIELDS: Final = ("position", "event_id", "type", "ts_ns", "command_id", "actor")
"""What a `set_by` reference copies from its record (explain adds the time, derived from ts_ns)."""

# Why a snapshot was not used (stable strings: logs, counters, `replay verify --json`).
FORMAT: Final = "FORMAT"
MALFORMED: Final = "MALFORMED"
STATE_HASH: Final = "STATE_HASH"
NO_RECORD: Final = "NO_RECORD"
CHAIN_HASH: Final = "CHAIN_HASH"
UNDECODABLE: Final = "UNDECODABLE"
SET_BY: Final = "SET_BY"
STORE_UNAVAILABLE: Final = "STORE_UNAVAILABLE"
TOO_MANY_UNTRUSTED: Final = "TOO_MANY_UNTRUSTED"

log = logging.getLogger("titan.snapshots")

SetBy = dict[str, dict[str, Any]]


class SnapshotStoreError(LedgerError):
    """The snapshot store cannot be read or written (missing table, lost connection, read-only)."""


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot is of, without its bytes."""

    stream_id: str
    version: int
    position: int
    chain_hash: str
    core_format: str
    state_sha256: str
    created_ns: int


@dataclass(frozen=True)
class Snapshot:
    """One stored snapshot: an account's state (canonical JSON of the core's codec) at a stream
    version, the position and chain hash of the ledger record at that version, and the `set_by`
    references (canonical JSON of {type: reference}) as of it. `created_ns` is metadata only."""

    stream_id: str
    version: int
    position: int
    chain_hash: str
    core_format: str
    state: bytes
    state_sha256: str
    set_by: bytes
    created_ns: int

    @property
    def info(self) -> SnapshotInfo:
        """The snapshot without its bytes."""
        return SnapshotInfo(
            self.stream_id,
            self.version,
            self.position,
            self.chain_hash,
            self.core_format,
            self.state_sha256,
            self.created_ns,
        )


class SnapshotStore(ABC):
    """Account snapshots beside a ledger, outside its hash chain."""

    @abstractmethod
    def save(self, snapshot: Snapshot) -> bool:
        """Store a snapshot unless its (stream, version) has one; return whether it was written."""

    @abstractmethod
    def nearest(
        self, stream_id: str, *, max_version: int | None = None, max_position: int | None = None
    ) -> Snapshot | None:
        """Return the stream's newest snapshot at or before a version and a position."""

    @abstractmethod
    def get(self, stream_id: str, version: int) -> Snapshot | None:
        """Return the stream's snapshot at a version."""

    @abstractmethod
    def listing(self, stream_id: str | None = None) -> list[SnapshotInfo]:
        """Return every snapshot (of one stream), by stream and version, without the bytes."""

    @abstractmethod
    def count(self) -> int:
        """Return how many snapshots are stored."""

    @abstractmethod
    def prune(self, stream_id: str, keep: int, at_most_version: int) -> int:
        """Delete the stream's snapshots above `at_most_version` and all but the newest `keep`
        (keep >= 1) at or below it; return how many went. The writer passes its own version: it
        holds the stream's lease, so a row above it is no honest snapshot, and rows with huge
        versions must not evict the honest ones."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


# Making snapshots -----------------------------------------------------------------------------


def make_snapshot(
    core_format: str,
    data: Mapping[str, Any],
    *,
    stream_id: str,
    version: int,
    position: int,
    chain_hash: str,
    set_by: Mapping[str, Mapping[str, Any]],
    created_ns: int,
) -> Snapshot:
    """A snapshot of the codec's data for a state (`core.snapshot.state_to_snapshot(state)`)."""
    state = canonical_bytes(data)
    return Snapshot(
        stream_id,
        version,
        position,
        chain_hash,
        core_format,
        state,
        sha256_hex(state),
        canonical_bytes(set_by),
        created_ns,
    )


def context_ref(record: Record) -> dict[str, Any]:
    """How a `set_by` entry names a context-setting record (REF_FIELDS, in that order)."""
    envelope = record.envelope
    return {
        "position": record.position,
        "event_id": envelope.get("event_id"),
        "type": record.type,
        "ts_ns": envelope.get("ts_ns"),
        "command_id": envelope.get("command_id"),
        "actor": envelope.get("actor"),
    }


def note_context(set_by: SetBy, records: Iterable[Record]) -> None:
    """Record, in stream order, the last record of each context-setting type among `records`."""
    for record in records:
        if record.type not in ORDER_FLOW_TYPES:
            set_by[record.type] = context_ref(record)


# The trust rule -------------------------------------------------------------------------------


class UntrustedSnapshot(Exception):
    """A snapshot the trust rule refuses: `code` says which check, the message what was found."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SnapshotSkip:
    """A snapshot a reader did not use, and why."""

    stream_id: str
    version: int
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "stream_id": self.stream_id,
            "version": self.version,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True)
class Trusted:
    """A snapshot that passed the trust rule: its state, its references, and the activation
    record of the state's policy (None when the state has none)."""

    snapshot: Snapshot
    state: Any
    set_by: SetBy
    policy_record: Record | None


def record_at(ledger: Ledger, position: int) -> Record | None:
    """The ledger record at a position (None when there is none: positions may have gaps)."""
    if position < 1:
        return None
    found = ledger.read_all(position - 1, 1)
    return found[0] if found and found[0].position == position else None


def trusted(core: Any, snapshot: Snapshot, ledger: Ledger) -> Trusted:
    """Apply the trust rule to a snapshot (see the module docstring); raise UntrustedSnapshot."""
    module = core.snapshot
    _check_shape(snapshot)
    if snapshot.core_format != module.SNAPSHOT_FORMAT:
        raise UntrustedSnapshot(
            FORMAT,
            f"written in format {snapshot.core_format[:100]!r}; this core reads {module.SNAPSHOT_FORMAT!r}",
        )
    found = sha256_hex(snapshot.state)
    if found != snapshot.state_sha256:
        raise UntrustedSnapshot(
            STATE_HASH,
            f"its state hashes to {found}, not the {snapshot.state_sha256[:100]!r} stored with it",
        )
    record = _checked_record(ledger, snapshot)
    if record.envelope.get("hash") != snapshot.chain_hash:
        raise UntrustedSnapshot(
            CHAIN_HASH,
            f"the ledger record at position {snapshot.position} has hash {record.envelope.get('hash')!r:.80}, "
            f"the snapshot names {snapshot.chain_hash[:100]!r}",
        )
    account_id = snapshot.stream_id[len(ACCOUNT_PREFIX) :]
    try:
        data = orjson.loads(snapshot.state)
        _check_policy_document(data)
        state = module.state_from_snapshot(data)
    except (ValueError, TypeError, RecursionError) as error:  # SnapshotError is a ValueError
        raise UntrustedSnapshot(
            UNDECODABLE, f"its state cannot be read: {str(error)[:300]}"
        ) from None
    if state.account_id != account_id:
        raise UntrustedSnapshot(
            UNDECODABLE,
            f"its state is of account {str(state.account_id)[:100]!r}, not {account_id!r}",
        )
    set_by, records = _checked_set_by(ledger, snapshot)
    policy_record = records.get(POLICY_ACTIVATED)
    policy_hash = state.policy_hash or ""
    activated = (
        (policy_record.envelope.get("data") or {}).get("policy_hash") if policy_record else None
    )
    if (activated or "") != policy_hash:
        raise UntrustedSnapshot(
            SET_BY,
            f"its state's policy is {policy_hash or 'none'} but the last activation it names "
            f"({'none' if policy_record is None else f'position {policy_record.position}'}) activated "
            f"{activated or 'none'}",
        )
    return Trusted(snapshot, state, set_by, policy_record)


def _check_policy_document(data: object) -> None:
    """The policy a state carries must hash to the policy hash it claims: the core keeps both and
    computes no hashes, so a state could otherwise pair one policy's limits with another's hash."""
    if not isinstance(data, dict) or data.get("policy") is None:
        return
    claimed, found = data.get("policy_hash"), document_hash(data["policy"])
    if claimed != found:
        raise ValueError(
            f"its policy document hashes to {found}, not to its policy_hash {str(claimed)[:100]!r}"
        )


def _check_shape(snapshot: Snapshot) -> None:
    """Every field of the type the port promises: a row read from a table may hold anything."""
    for name, kind in (
        ("stream_id", str),
        ("version", int),
        ("position", int),
        ("chain_hash", str),
        ("core_format", str),
        ("state", bytes),
        ("state_sha256", str),
        ("set_by", bytes),
    ):
        value = getattr(snapshot, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UntrustedSnapshot(
                MALFORMED, f"its {name} is a {type(value).__name__}, not a {kind.__name__}"
            )
    if not snapshot.stream_id.startswith(ACCOUNT_PREFIX):
        raise UntrustedSnapshot(
            MALFORMED, f"stream {snapshot.stream_id[:100]!r} is not an account stream"
        )
    if snapshot.version < 1 or snapshot.position < 1:
        raise UntrustedSnapshot(MALFORMED, "its version and position must be at least 1")


def _checked_record(ledger: Ledger, snapshot: Snapshot) -> Record:
    record = record_at(ledger, snapshot.position)
    if record is None:
        raise UntrustedSnapshot(
            NO_RECORD, f"the ledger has no record at position {snapshot.position}"
        )
    if (record.stream_id, record.version) != (snapshot.stream_id, snapshot.version):
        raise UntrustedSnapshot(
            NO_RECORD,
            f"the ledger record at position {snapshot.position} is {record.stream_id[:100]!r} version "
            f"{record.version}, not {snapshot.stream_id!r} version {snapshot.version}",
        )
    return record


def _checked_set_by(ledger: Ledger, snapshot: Snapshot) -> tuple[SetBy, dict[str, Record]]:
    """The snapshot's references, each one checked against the record it names."""
    try:
        raw = orjson.loads(snapshot.set_by)
    except orjson.JSONDecodeError as error:
        raise UntrustedSnapshot(SET_BY, f"its set_by is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise UntrustedSnapshot(SET_BY, f"its set_by is a JSON {type(raw).__name__}, not an object")
    set_by: SetBy = {}
    records: dict[str, Record] = {}
    for kind, ref in raw.items():
        if not isinstance(ref, dict) or tuple(sorted(ref)) != tuple(sorted(REF_FIELDS)):
            raise UntrustedSnapshot(
                SET_BY, f"its set_by entry {kind[:100]!r} is not a reference {list(REF_FIELDS)}"
            )
        position = ref["position"]
        if kind in ORDER_FLOW_TYPES or not isinstance(position, int) or isinstance(position, bool):
            raise UntrustedSnapshot(
                SET_BY, f"its set_by entry {kind[:100]!r} is not a context reference"
            )
        record = record_at(ledger, position) if 0 < position <= snapshot.position else None
        if (
            record is None
            or record.stream_id != snapshot.stream_id
            or record.version > snapshot.version
            or context_ref(record) != ref
            or record.type != kind
        ):
            raise UntrustedSnapshot(
                SET_BY,
                f"its set_by entry {kind[:100]!r} does not name that record of this stream at position {position}",
            )
        set_by[kind] = {name: ref[name] for name in REF_FIELDS}
        records[kind] = record
    return set_by, records


# Where a reader starts ------------------------------------------------------------------------


@dataclass
class AccountStart:
    """Where an account's fold begins: a trusted snapshot's state (or the initial state, at
    version 0), the stream version and ledger position it reflects, its `set_by` references,
    and the snapshots skipped on the way."""

    state: Any
    version: int = 0
    position: int = 0
    chain_hash: str = ""
    set_by: SetBy = field(default_factory=dict)
    snapshot: SnapshotInfo | None = None
    policy_record: Record | None = None
    skipped: list[SnapshotSkip] = field(default_factory=list)


class Snapshots:
    """A ledger's snapshot store together with the ledger its snapshots are checked against."""

    def __init__(self, store: SnapshotStore, ledger: Ledger) -> None:
        self.store = store
        self.ledger = ledger
        self.skipped: list[SnapshotSkip] = []
        """Every snapshot this object refused so far (for callers that count them)."""
        self.used: list[SnapshotInfo] = []
        """Every snapshot this object started a fold from so far (readers say so: `used_note`)."""

    def start(
        self,
        core: Any,
        account_id: str,
        *,
        max_version: int | None = None,
        max_position: int | None = None,
    ) -> AccountStart:
        """Where a fold of the account up to a version and a position may begin: the newest
        trusted snapshot at or before both, else the initial state. Never raises for a snapshot
        or the store: what is skipped is logged and listed in `skipped`."""
        stream_id = account_stream(account_id)
        start = AccountStart(core.decider.initial_state(account_id))
        if not hasattr(core, "snapshot"):
            return start  # a core without the codec: nothing to start from
        limit = max_version
        for _ in range(MAX_UNTRUSTED):
            try:
                snapshot = self.store.nearest(
                    stream_id, max_version=limit, max_position=max_position
                )
            except LedgerError as error:
                self._skip(
                    start, SnapshotSkip(stream_id, limit or 0, STORE_UNAVAILABLE, str(error)[:300])
                )
                return start
            if snapshot is None:
                return start
            try:
                found = trusted(core, snapshot, self.ledger)
            except UntrustedSnapshot as refused:
                self._skip(
                    start,
                    SnapshotSkip(stream_id, stored_int(snapshot.version), refused.code, refused.message),
                )
            except LedgerError as error:  # the ledger could not be read: start from zero
                self._skip(
                    start,
                    SnapshotSkip(
                        stream_id, stored_int(snapshot.version), STORE_UNAVAILABLE, str(error)[:300]
                    ),
                )
                return start
            else:
                self.used.append(snapshot.info)
                return AccountStart(
                    found.state,
                    snapshot.version,
                    snapshot.position,
                    snapshot.chain_hash,
                    found.set_by,
                    snapshot.info,
                    found.policy_record,
                    start.skipped,
                )
            version = stored_int(snapshot.version)
            if version <= 1:
                return start
            limit = version - 1
        self._skip(
            start,
            SnapshotSkip(
                stream_id,
                limit or 0,
                TOO_MANY_UNTRUSTED,
                f"{MAX_UNTRUSTED} untrusted snapshots in a row: folding from zero",
            ),
        )
        return start

    def _skip(self, start: AccountStart, skip: SnapshotSkip) -> None:
        log.warning(
            "snapshot of %s at version %s not used (%s): %s",
            skip.stream_id,
            skip.version,
            skip.code,
            skip.message,
        )
        start.skipped.append(skip)
        self.skipped.append(skip)

    def close(self) -> None:
        """Close the store (the ledger is its owner's)."""
        self.store.close()


def used_note(info: SnapshotInfo) -> str:
    """What a reader says (on stderr) of a snapshot it started from: it passed the trust rule,
    which cannot tell a planted state from the fold (the module docstring), and only the gate can."""
    return (
        f"note: {info.stream_id} started from its stored snapshot at version {info.version} "
        f"(position {info.position}), not proved by this read: `titan replay verify` proves "
        "snapshots against the fold (--no-snapshots folds from zero)"
    )


def stored_int(value: object) -> int:
    """A snapshot row's version or position as an integer, 0 when the row holds something else
    (a row read from a table may hold anything; the trust rule refuses such a row)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
