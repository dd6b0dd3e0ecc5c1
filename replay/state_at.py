"""`titan replay`: each account's state as it was at a point of the ledger's history.

The state is rebuilt the way the live handler rebuilds it: the account stream's recorded events
folded through the core's `evolve` (`commands.accounts.fold`), and shown through the same view
as `titan state` (`commands.views.state_view`), so whatever the state view shows — positions,
open orders, policy, mode, and the Brain's parts as they join it — `titan replay` shows too.

- `--until POSITION`: every record up to and including that position.
- `--until TIME`: per account, every event whose time (`ts_ns`, the command's time) is at or
  before it. Time never runs backwards within an account stream, so this is a prefix of each
  stream; across accounts, positions and times need not agree, which is why it is per account.

Given the ledger's snapshots, each account starts from its newest trusted snapshot at or before
the cut (commands/snapshots.py) and only the records after it are folded; the records before it
are still read (they name the accounts and the ledger's first time), so the result is the fold's,
field for field. Should a record covered by the snapshot lie beyond a time cut (time ran backwards
in a stream: no titan writes that, an imported or forged ledger may hold it), before or after the
first record within the cut, the replay is done again without snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from commands.accounts import fold
from commands.ports import Ledger, LedgerError
from commands.snapshots import AccountStart, Snapshots, record_at
from commands.views import state_view

from .points import POSITION, Point, format_ns
from .verify import ACCOUNT_PREFIX


class ReplayInputError(ValueError):
    """A request the ledger cannot answer (beyond the head, before the first record, unknown id)."""


@dataclass
class AccountAt:
    """One account replayed to a point."""

    account_id: str
    state: Any
    version: int = 0
    last_position: int = 0
    last_ts_ns: int = 0
    start: AccountStart | None = None
    """The snapshot it started from, when it did (its records up to there are not folded)."""


@dataclass
class StateAt:
    """The accounts as they were at a point."""

    point: Point | None
    head_position: int
    accounts: dict[str, AccountAt] = field(default_factory=dict)
    records_read: int = 0
    records_folded: int = 0

    def as_dict(self, core: Any) -> dict[str, Any]:
        """JSON form: the cut, then each account's state view."""
        accounts = []
        for account_id in sorted(self.accounts):
            at = self.accounts[account_id]
            accounts.append(
                {
                    "as_of": {
                        "position": at.last_position,
                        "stream_version": at.version,
                        "ts_ns": at.last_ts_ns,
                        "time": format_ns(at.last_ts_ns),
                    },
                    "state": state_view(core, at.state),
                }
            )
        return {
            "until": None
            if self.point is None
            else {"kind": self.point.kind, "value": self.point.value, "text": self.point.text},
            "head_position": self.head_position,
            "accounts": accounts,
        }


class _NotAPrefix(Exception):
    """A record a snapshot covers lies beyond the cut: replay without snapshots."""


def replay_state(
    ledger: Ledger,
    core: Any,
    until: Point | None = None,
    account_id: str | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    snapshots: Snapshots | None = None,
) -> StateAt:
    """Fold every account stream (or one) up to a point, each from its newest trusted snapshot
    at or before it when `snapshots` are given; raise ReplayInputError for a point the ledger
    does not have or an account it does not know."""
    head_position = ledger.head()[0]
    if until is not None and until.kind == POSITION and until.value > head_position:
        raise ReplayInputError(
            f"position {until.value} is beyond the ledger's head (position {head_position})"
        )
    if snapshots is not None:
        try:
            return _replay(ledger, core, until, account_id, head_position, progress, snapshots)
        except _NotAPrefix:
            pass
    return _replay(ledger, core, until, account_id, head_position, progress, None)


def _replay(
    ledger: Ledger,
    core: Any,
    until: Point | None,
    account_id: str | None,
    head_position: int,
    progress: Callable[[int], None] | None,
    snapshots: Snapshots | None,
) -> StateAt:
    result = StateAt(until, head_position)
    first_ts: int | None = None
    known: set[str] = set()
    # Streams with a record beyond a time cut before their first one within it: a snapshot of
    # such a stream covers a record the cut leaves out (time ran backwards in it).
    cut_first: set[str] = set()
    stream_filter = ACCOUNT_PREFIX + account_id if account_id is not None else None
    for record in ledger.iter_all(0, 2000):
        if record.position > head_position:
            break  # appended after we began: the replay is of the head as it was then
        if until is not None and until.kind == POSITION and record.position > until.value:
            break
        result.records_read += 1
        if progress is not None and result.records_read % 2000 == 0:
            progress(result.records_read)
        ts_ns = int(record.envelope.get("ts_ns", 0))
        if first_ts is None or ts_ns < first_ts:
            first_ts = ts_ns
        stream_id = record.stream_id
        if not stream_id.startswith(ACCOUNT_PREFIX):
            continue
        known.add(stream_id[len(ACCOUNT_PREFIX) :])
        if stream_filter is not None and stream_id != stream_filter:
            continue
        name = stream_id[len(ACCOUNT_PREFIX) :]
        at = result.accounts.get(name)
        start = at.start if at is not None else None
        if at is not None and start is not None and record.version <= start.version:
            # Covered by the snapshot: not folded, but it must be part of the cut.
            if until is not None and until.kind != POSITION and ts_ns > until.value:
                raise _NotAPrefix
            if record.version == start.version and record.position != start.position:
                raise _NotAPrefix
            at.version, at.last_position, at.last_ts_ns = record.version, record.position, ts_ns
            continue
        if until is not None and until.kind != POSITION and ts_ns > until.value:
            if at is None:
                cut_first.add(name)
            continue
        if at is None:
            at = result.accounts[name] = _account_at(ledger, core, name, until, head_position, snapshots)
            if at.start is not None:
                if (
                    name in cut_first
                    or record.version > at.start.version
                    or (record.version == at.start.version and record.position != at.start.position)
                ):
                    raise _NotAPrefix  # not the stream's records as the snapshot saw them
                at.version, at.last_position, at.last_ts_ns = record.version, record.position, ts_ns
                continue
        at.state = fold(core, at.state, (record,))
        result.records_folded += 1
        at.version = record.version
        at.last_position = record.position
        at.last_ts_ns = ts_ns
    if until is not None and until.kind != POSITION and (first_ts is None or until.value < first_ts):
        first = "the ledger is empty" if first_ts is None else f"its first record is at {format_ns(first_ts)} ({first_ts} ns)"
        raise ReplayInputError(f"{until.describe()} is before the first record of the ledger: {first}")
    if account_id is not None and account_id not in result.accounts:
        if account_id in known:
            raise ReplayInputError(f"account {account_id!r} has no records at or before {until.describe() if until else 'the head'}")
        listing = ", ".join(sorted(known)) or "none"
        raise ReplayInputError(f"no account {account_id!r} in this ledger (accounts: {listing})")
    return result


def _account_at(
    ledger: Ledger, core: Any, name: str, until: Point | None, head_position: int, snapshots: Snapshots | None
) -> AccountAt:
    """An account met for the first time: at its newest trusted snapshot within the cut, if any."""
    at = AccountAt(name, core.decider.initial_state(name))
    if snapshots is None:
        return at
    upto = until.value if until is not None and until.kind == POSITION else head_position
    max_version = None
    if until is not None and until.kind != POSITION:
        max_version = _last_version_by(ledger, snapshots, ACCOUNT_PREFIX + name, until.value, upto)
        if max_version is None:
            return at
    start = snapshots.start(core, name, max_version=max_version, max_position=upto)
    if start.snapshot is not None:
        at.state, at.start = start.state, start
    return at


def _last_version_by(ledger: Ledger, snapshots: Snapshots, stream_id: str, ts_ns: int, upto: int) -> int | None:
    """The newest snapshot version of a stream whose record is at or before a time (from the
    store's listing and one record read per candidate, newest first), None when there is none."""
    try:
        listing = snapshots.store.listing(stream_id)
    except LedgerError:  # an unreadable store: no snapshot, the fold from zero
        return None
    for info in reversed(listing):
        if info.position > upto:
            continue
        record = record_at(ledger, info.position)
        if record is not None and int(record.envelope.get("ts_ns", 0)) <= ts_ns:
            return info.version
    return None
