"""The baseline to beat: the same order flow through the eventsourcing library's stock Application.

One aggregate per account, one `save()` per command (its own transaction), on the library's own
SQLite or PostgreSQL persistence module. No pre-trade checks, no hash chain, no command records:
the baseline measures only what the library itself does, with its aggregate cache on, so the
ratio is generous to it.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any
from urllib.parse import urlparse
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from infra.bench.figures import throughput


class Account(Aggregate):
    """A stock event-sourced account: orders, acks and fills as library events."""

    @event("Opened")
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.open_orders: dict[str, str] = {}
        self.position = 0

    @event("OrderPlaced")
    def place(self, order_id: str, side: str, quantity: str, price: str) -> None:
        self.open_orders[order_id] = side

    @event("OrderAcked")
    def ack(self, order_id: str, venue_order_id: str) -> None:
        pass

    @event("OrderFilled")
    def fill(self, order_id: str, fill_id: str, quantity: str, price: str) -> None:
        side = self.open_orders.pop(order_id, "BUY")
        self.position += 1 if side == "BUY" else -1


class Accounts(Application[UUID]):
    """The stock Application: get the aggregate, call it, save it."""

    def open(self, account_id: str) -> UUID:
        account = Account(account_id)
        self.save(account)
        return account.id

    def apply(self, account_id: UUID, kind: str, payload: dict[str, str]) -> None:
        account: Account = self.repository.get(account_id)
        getattr(account, kind)(**payload)
        self.save(account)


def _flow(n: int) -> list[tuple[str, dict[str, str]]]:
    flow: list[tuple[str, dict[str, str]]] = []
    i = 0
    while len(flow) < n:
        order_id = f"o{i}"
        side = "BUY" if (i // 3) % 2 == 0 else "SELL"
        flow.append(("place", {"order_id": order_id, "side": side, "quantity": "0.010", "price": "65000.0"}))
        flow.append(("ack", {"order_id": order_id, "venue_order_id": "V" + order_id}))
        flow.append(("fill", {"order_id": order_id, "fill_id": "F" + order_id, "quantity": "0.010", "price": "65000.0"}))
        i += 1
    return flow[:n]


def _run(env: dict[str, str], n: int) -> dict[str, Any]:
    # The library's own aggregate cache: without it every command replays the whole stream.
    app = Accounts(env={**env, "AGGREGATE_CACHE_MAXSIZE": "100"})
    account_id = app.open(str(uuid5(NAMESPACE_URL, "bench")))
    latencies = []
    began = time.perf_counter()
    for kind, payload in _flow(n):
        t0 = time.perf_counter()
        app.apply(account_id, kind, payload)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - began
    app.close()
    return throughput(latencies, elapsed)


def baseline_sqlite(n: int) -> dict[str, Any]:
    """The stock Application on the library's SQLite module (a temporary file)."""
    with tempfile.TemporaryDirectory() as directory:
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": os.path.join(directory, "baseline.db")}
        return _run(env, n)


def baseline_postgres(url: str, n: int) -> dict[str, Any]:
    """The stock Application on the library's PostgreSQL module, in its own schema of `url`'s database."""
    parts = urlparse(url)
    schema = f"baseline_{os.getpid()}"
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": (parts.path or "/postgres").lstrip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",
        "POSTGRES_SCHEMA": schema,
        "CREATE_TABLE": "y",
    }
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    try:
        return _run(env, n)
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
