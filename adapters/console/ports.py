"""What the console reads and what it asks to be done: two small ports, bound by the composition
root (infra/console.py) to a ledger, its read models and a command bus. The console itself never
opens a database or a NATS connection."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from commands.ports import Record, RecordFilter
from schemas import commands as wire


class ConsoleError(Exception):
    """A request the console refuses or cannot serve: a machine-readable code, a message naming
    what was wrong and what is accepted, and the HTTP status it maps to."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of ledger records: the matches, the position the scan reached, the head."""

    records: Sequence[Record]
    scanned_to: int
    head: int


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a command built by the console is stamped with: the time of receipt and the policy
    hash in force (a flatten acts under the active policy)."""

    ts_ns: int
    policy_hash: str


CommandMaker = Callable[[Stamp], wire.AnyCommand]


class ConsoleData(ABC):
    """The ledger and its read models, read-only."""

    @abstractmethod
    async def accounts(self) -> list[str]:
        """Return the accounts the ledger holds, sorted."""

    @abstractmethod
    async def rows(self, table: str, where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Return a read-model table's rows (matching `where`, column = value), in key order."""

    @abstractmethod
    async def latest(self, table: str, order_by: str, limit: int, where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Return at most `limit` rows of a read-model table, highest `order_by` first."""

    @abstractmethod
    async def state(self, account_id: str) -> dict[str, Any]:
        """Return the account's state view as of the ledger's head (commands.views.state_view)."""

    @abstractmethod
    async def policies(self, account_id: str) -> list[dict[str, Any]]:
        """Return every policy activation of the account, oldest first: position, ts_ns, actor,
        policy_hash, policy (the document), reason (when recorded)."""

    @abstractmethod
    async def events(self, after: int, first: int, where: RecordFilter) -> EventPage:
        """Return up to `first` records after a position that match, with the scan's reach."""

    @abstractmethod
    async def explain(self, ident: str) -> dict[str, Any]:
        """Return the decision trace of an order or command (as `titan explain --json`); raise
        ConsoleError NOT_FOUND when the ledger has neither."""

    @abstractmethod
    async def head(self) -> int:
        """Return the ledger's last position."""

    @abstractmethod
    async def close(self) -> None:
        """Release what it holds."""


class ConsoleCommands(ABC):
    """The same bus every other command goes through."""

    @abstractmethod
    async def submit(self, account_id: str, make: CommandMaker) -> dict[str, Any]:
        """Stamp, decide and record one command; return its outcome (the `titan submit` JSON).
        Raise ConsoleError when no writer can take it (WRITER_BUSY, NOT_LEADER, LEDGER_UNAVAILABLE)."""

    @abstractmethod
    def audit(self, line: str) -> None:
        """Write one line to the console's audit log (what the ledger cannot hold)."""

    @abstractmethod
    async def dlq_replay(self, entry_ids: Sequence[str], actor: str, reason: str) -> list[dict[str, Any]]:
        """Re-publish dead letters on their original subjects, through intake."""

    @abstractmethod
    async def dlq_purge(self, account_id: str, entry_ids: Sequence[str], actor: str, reason: str) -> dict[str, Any]:
        """Record a purge (purge_dlq.v1) and, once accepted, remove the entries from TITAN_DLQ."""
