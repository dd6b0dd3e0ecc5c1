"""Fixtures for the projections' unit tests: real ledger records from real commands, and a
reference that applies row changes one at a time to plain dicts (the semantics every store must
have).

    session = trading()                       # an in-memory ledger with the default policy active
    session.place("o1")                       # PlaceOrder "o1" -> order "ord-o1"
    session.fill("ord-o1", "f1", "0.010", "65000.0")
    rows = fold_rows(positions.PROJECTION, session.records())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from adapters.sqlite.ledger import SQLiteLedger
from commands.handlers import Bus, Outcome
from commands.ports import Record
from commands.views import state_view
from infra.bootstrap import bootstrap
from infra.settings import Settings
from infra.submit import ensure_initialized
from projections.model import Projection
from schemas import commands as wire
from tests.projections_support import fold_rows

ACCOUNT = "main"
T0 = 1_767_225_600_000_000_000


class Trading:
    """A bus over an in-memory ledger; commands with readable defaults, time moving 10 ms each."""

    def __init__(self) -> None:
        self.ledger = SQLiteLedger(":memory:")
        self.bus: Bus = bootstrap(Settings(core="interpreted"), ledger=self.ledger)
        ensure_initialized(self.bus, ACCOUNT)
        self.policy_hash = self.bus.state(ACCOUNT).policy_hash
        self.now = T0
        self.n = 0

    def _common(self, prefix: str) -> dict[str, Any]:
        self.n += 1
        self.now += 10_000_000  # 10 ms: quick acks keep the venue OK
        return {"command_id": f"{prefix}-{self.n}", "account_id": ACCOUNT, "ts_ns": self.now, "actor": "tester"}

    def handle(self, command: wire.AnyCommand) -> Outcome:
        return self.bus.handle(command)

    def truth(self) -> Outcome:
        """A truth snapshot from the paper venue that agrees with the account's own state."""
        view = state_view(self.bus.ctx.core, self.bus.state(ACCOUNT))
        held = [wire.VenuePosition(symbol=p["symbol"], quantity=p["quantity"]) for p in view["positions"] if p["venue"] == "paper"]
        open_ids = [o["order_id"] for o in view["open_orders"] if o["venue"] == "paper"]
        common = self._common("truth")
        return self.handle(
            wire.RecordTruthSnapshot(
                **common, venue="paper", positions=held, open_order_ids=open_ids, equity=view["equity"],
                venue_ts_ns=common["ts_ns"], latency_ms=5,
            )
        )

    def place(self, name: str, *, side: str = "BUY", quantity: str = "0.010", price: str = "65000.0", **extra: Any) -> Outcome:
        """PlaceOrder `name` (order `ord-<name>`), after a truth snapshot so truth gating passes."""
        self.truth()
        common = self._common("place")
        common["command_id"] = name
        fields: dict[str, Any] = {
            "policy_hash": self.policy_hash,
            "phase_id": 1,
            "intent_id": f"intent-{name}",
            "client_order_id": f"cl-{name}",
            "venue": "paper",
            "symbol": "BTCUSDT",
            "side": side,
            "quantity": quantity,
            "price": price,
            "reference_price": price,
            "correlation_id": f"corr-{name}",
        }
        fields.update(extra)
        return self.handle(wire.PlaceOrder(**common, **fields))

    def ack(self, order_id: str) -> Outcome:
        return self.handle(wire.RecordOrderAck(**self._common("ack"), order_id=order_id, venue_order_id="V" + order_id))

    def fill(self, order_id: str, fill_id: str, quantity: str, price: str, fee: str = "0.01") -> Outcome:
        return self.handle(
            wire.RecordFill(**self._common("fill"), order_id=order_id, fill_id=fill_id, quantity=quantity, price=price, fee=fee)
        )

    def cancel(self, order_id: str) -> Outcome:
        return self.handle(wire.CancelOrder(**self._common("cancel"), order_id=order_id, reason="operator"))

    def cancelled(self, order_id: str) -> Outcome:
        return self.handle(wire.RecordCancelled(**self._common("cxl"), order_id=order_id, venue_reason="expired"))

    def venue_reject(self, order_id: str) -> Outcome:
        return self.handle(wire.RecordVenueReject(**self._common("vrej"), order_id=order_id, venue_reason="margin"))

    def records(self) -> list[Record]:
        return list(self.ledger.iter_all())


@pytest.fixture
def trading() -> Iterator[Callable[[], Trading]]:
    sessions: list[Trading] = []

    def make() -> Trading:
        sessions.append(Trading())
        return sessions[-1]

    yield make
    for session in sessions:
        session.ledger.close()


@pytest.fixture
def rows_of() -> Callable[[Projection, Sequence[Record]], dict[str, list[dict[str, Any]]]]:
    return fold_rows
