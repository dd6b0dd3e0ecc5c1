"""The paper engine's durable book (docs/paper.md): orders, the positions its own fills made, and
an outbox of planned venue reports, in one SQLite file (mode 0600).

The engine writes the plan for one NATS message and the fact that it handled that message in ONE
transaction (`plan_place`, `plan_cancel`), and acks the message only after it committed: a message
redelivered after a crash finds its order (or its cancel) here and plans nothing new, so a kill -9
at any point neither invents nor forgets a fill. Reports leave from the outbox; one is marked sent
when titan answered it (`mark_sent`, which also moves the book: open orders, positions, cash), and
every unsent one is sent again after a restart (titan answers a resend as a duplicate).

Quantities and prices are integers of 1e-8 (`*_e8`); money is 1e-8 of the quote currency.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

E8: Final = 10**8

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS handled (
    msg_id TEXT PRIMARY KEY,          -- the exec message's Nats-Msg-Id (order id, cancel.<order id>)
    handled_ts_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty_e8 INTEGER NOT NULL,
    qty_decimals INTEGER NOT NULL,
    filled_e8 INTEGER NOT NULL DEFAULT 0,
    open INTEGER NOT NULL DEFAULT 0,  -- acked and neither filled, cancelled nor rejected (as titan was told)
    rejected INTEGER NOT NULL DEFAULT 0,
    placed_ts_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    order_id TEXT,
    kind TEXT NOT NULL,               -- ack, fill, reject, cancelled, snapshot
    due_ts_ns INTEGER NOT NULL,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    qty_e8 INTEGER NOT NULL DEFAULT 0,
    price_e8 INTEGER NOT NULL DEFAULT 0,
    fee_e8 INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    void INTEGER NOT NULL DEFAULT 0   -- planned, then overtaken by a cancel: never sent
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sent, void, due_ts_ns, seq);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (order_id);
CREATE TABLE IF NOT EXISTS positions (
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    qty_e8 INTEGER NOT NULL,          -- signed: positive long
    qty_decimals INTEGER NOT NULL,
    last_price_e8 INTEGER NOT NULL,
    PRIMARY KEY (account_id, symbol)
);
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    cash_e8 INTEGER NOT NULL DEFAULT 0,  -- what fills moved, fees included (equity = start + cash + marks)
    snapshots INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class Report:
    """One planned venue report: a command for titan's intake, due at a time."""

    command_id: str
    account_id: str
    order_id: str | None
    kind: str
    due_ts_ns: int
    subject: str
    payload: bytes
    qty_e8: int = 0
    price_e8: int = 0
    fee_e8: int = 0


@dataclass(frozen=True, slots=True)
class Due:
    """An outbox report to send now."""

    seq: int
    command_id: str
    subject: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class NewOrder:
    """What the book keeps of an order it planned reports for."""

    order_id: str
    account_id: str
    symbol: str
    side: str
    qty_e8: int
    qty_decimals: int


@dataclass(frozen=True, slots=True)
class PositionRow:
    symbol: str
    qty_e8: int
    qty_decimals: int
    last_price_e8: int


@dataclass(frozen=True, slots=True)
class AccountBook:
    """An account as the engine's own book has it (what a truth snapshot reports)."""

    account_id: str
    cash_e8: int
    positions: tuple[PositionRow, ...]
    open_order_ids: tuple[str, ...]


class Book:
    """The engine's SQLite book. Not thread-safe: one engine, one event loop, one connection."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it: the book says what an account holds.
        descriptor = os.open(file, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(descriptor)
        os.chmod(file, 0o600)
        self.path = file
        self._db = sqlite3.connect(file, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{file}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    # Reading -------------------------------------------------------------------------------

    def handled(self, msg_id: str) -> bool:
        """Whether an exec message with this id was already handled (a redelivery)."""
        row = self._db.execute("SELECT 1 FROM handled WHERE msg_id = ?", (msg_id,)).fetchone()
        return row is not None

    def has_order(self, order_id: str) -> bool:
        """Whether the book holds this order (its reports were planned)."""
        return self._db.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)).fetchone() is not None

    def accounts(self) -> list[str]:
        """Every account the book has seen, sorted."""
        return [row[0] for row in self._db.execute("SELECT account_id FROM accounts ORDER BY account_id")]

    def due(self, now_ns: int, limit: int) -> list[Due]:
        """Unsent reports due by now, in due order (then planning order)."""
        rows = self._db.execute(
            "SELECT seq, command_id, subject, payload FROM outbox WHERE sent = 0 AND void = 0 AND due_ts_ns <= ? "
            "ORDER BY due_ts_ns, seq LIMIT ?",
            (now_ns, limit),
        )
        return [Due(seq, command_id, subject, bytes(payload)) for seq, command_id, subject, payload in rows]

    def next_due_ts_ns(self) -> int | None:
        """When the next unsent report falls due, or None."""
        row = self._db.execute("SELECT MIN(due_ts_ns) FROM outbox WHERE sent = 0 AND void = 0").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def unsent(self) -> int:
        """Reports planned and not yet answered by titan."""
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent = 0 AND void = 0").fetchone()[0])

    def account_book(self, account_id: str) -> AccountBook:
        """The account's cash, positions and open orders, as the reports titan answered made them."""
        row = self._db.execute("SELECT cash_e8 FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
        positions = tuple(
            PositionRow(symbol, qty, decimals, price)
            for symbol, qty, decimals, price in self._db.execute(
                "SELECT symbol, qty_e8, qty_decimals, last_price_e8 FROM positions WHERE account_id = ? ORDER BY symbol",
                (account_id,),
            )
        )
        open_ids = tuple(
            r[0]
            for r in self._db.execute(
                "SELECT order_id FROM orders WHERE account_id = ? AND open = 1 ORDER BY order_id", (account_id,)
            )
        )
        return AccountBook(account_id, int(row[0]) if row else 0, positions, open_ids)

    def reports(self, order_id: str) -> list[tuple[str, str, int, int]]:
        """An order's planned, not voided reports: (command id, kind, qty_e8, price_e8), planning order."""
        return [
            (c, k, q, p)
            for c, k, q, p in self._db.execute(
                "SELECT command_id, kind, qty_e8, price_e8 FROM outbox WHERE order_id = ? AND void = 0 ORDER BY seq",
                (order_id,),
            )
        ]

    def future_reports(self, order_id: str, now_ns: int) -> list[tuple[str, str, int]]:
        """An order's unsent, not voided reports due after now: (command id, kind, due)."""
        return [
            (c, k, d)
            for c, k, d in self._db.execute(
                "SELECT command_id, kind, due_ts_ns FROM outbox WHERE order_id = ? AND void = 0 AND sent = 0 "
                "AND due_ts_ns > ? ORDER BY seq",
                (order_id, now_ns),
            )
        ]

    def order_rejected(self, order_id: str) -> bool:
        """Whether the venue's plan for this order was a reject."""
        row = self._db.execute(
            "SELECT 1 FROM outbox WHERE order_id = ? AND kind = 'reject' AND void = 0", (order_id,)
        ).fetchone()
        return row is not None

    # Writing (each call one transaction) -----------------------------------------------------

    def plan_place(self, msg_id: str, order: NewOrder | None, account_id: str, reports: list[Report], now_ns: int) -> None:
        """Record a place message as handled, with its order (None for a refused one) and its reports."""
        with self._transaction():
            self._db.execute("INSERT INTO handled (msg_id, handled_ts_ns) VALUES (?, ?)", (msg_id, now_ns))
            self._db.execute("INSERT OR IGNORE INTO accounts (account_id) VALUES (?)", (account_id,))
            if order is not None:
                self._db.execute(
                    "INSERT INTO orders (order_id, account_id, symbol, side, qty_e8, qty_decimals, placed_ts_ns) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (order.order_id, order.account_id, order.symbol, order.side, order.qty_e8, order.qty_decimals, now_ns),
                )
            self._insert(reports)

    def plan_cancel(self, msg_id: str, account_id: str, void: list[str], cancelled: Report | None, now_ns: int) -> None:
        """Record a cancel message as handled: void the order's overtaken reports and plan its
        cancelled report (an expiry planned earlier has the same command id: it is replaced)."""
        with self._transaction():
            self._db.execute("INSERT INTO handled (msg_id, handled_ts_ns) VALUES (?, ?)", (msg_id, now_ns))
            self._db.execute("INSERT OR IGNORE INTO accounts (account_id) VALUES (?)", (account_id,))
            for command_id in void:
                self._db.execute("UPDATE outbox SET void = 1 WHERE command_id = ? AND sent = 0", (command_id,))
            if cancelled is not None:
                self._db.execute("DELETE FROM outbox WHERE command_id = ? AND sent = 0", (cancelled.command_id,))
                self._insert([cancelled])

    def plan_snapshot(self, account_id: str, build: Callable[[int, AccountBook], Report]) -> Report:
        """Number the account's next truth snapshot, build it and put it in the outbox, at once."""
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO accounts (account_id) VALUES (?)", (account_id,))
            row = self._db.execute("SELECT snapshots FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
            number = int(row[0]) + 1
            self._db.execute("UPDATE accounts SET snapshots = ? WHERE account_id = ?", (number, account_id))
            report = build(number, self.account_book(account_id))
            self._insert([report])
        return report

    def mark_sent(self, seq: int) -> None:
        """Titan answered this report: mark it sent and move the book as the venue report says."""
        with self._transaction():
            row = self._db.execute(
                "SELECT account_id, order_id, kind, qty_e8, price_e8, fee_e8, sent FROM outbox WHERE seq = ?", (seq,)
            ).fetchone()
            if row is None or row[6]:
                return
            account_id, order_id, kind, qty_e8, price_e8, fee_e8, _sent = row
            self._db.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
            if order_id is None:
                return
            if kind == "ack":
                self._db.execute("UPDATE orders SET open = 1 WHERE order_id = ? AND filled_e8 < qty_e8", (order_id,))
            elif kind in ("cancelled", "reject"):
                self._db.execute(
                    "UPDATE orders SET open = 0, rejected = ? WHERE order_id = ?", (int(kind == "reject"), order_id)
                )
            elif kind == "fill":
                self._fill(account_id, order_id, qty_e8, price_e8, fee_e8)

    def _fill(self, account_id: str, order_id: str, qty_e8: int, price_e8: int, fee_e8: int) -> None:
        order = self._db.execute(
            "SELECT symbol, side, qty_e8, filled_e8, qty_decimals FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()
        if order is None:
            return
        symbol, side, _total_e8, filled_e8, qty_decimals = order
        filled_e8 += qty_e8
        self._db.execute(
            "UPDATE orders SET filled_e8 = ?, open = CASE WHEN ? >= qty_e8 THEN 0 ELSE open END WHERE order_id = ?",
            (filled_e8, filled_e8, order_id),
        )
        signed = qty_e8 if side == "BUY" else -qty_e8
        self._db.execute(
            "INSERT INTO positions (account_id, symbol, qty_e8, qty_decimals, last_price_e8) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (account_id, symbol) DO UPDATE SET qty_e8 = qty_e8 + excluded.qty_e8, "
            "qty_decimals = excluded.qty_decimals, last_price_e8 = excluded.last_price_e8",
            (account_id, symbol, signed, qty_decimals, price_e8),
        )
        notional_e8 = qty_e8 * price_e8 // E8
        cash = (-notional_e8 if side == "BUY" else notional_e8) - fee_e8
        self._db.execute("UPDATE accounts SET cash_e8 = cash_e8 + ? WHERE account_id = ?", (cash, account_id))

    def _insert(self, reports: list[Report]) -> None:
        self._db.executemany(
            "INSERT INTO outbox (command_id, account_id, order_id, kind, due_ts_ns, subject, payload, qty_e8, "
            "price_e8, fee_e8) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.command_id, r.account_id, r.order_id, r.kind, r.due_ts_ns, r.subject, r.payload, r.qty_e8, r.price_e8, r.fee_e8)
                for r in reports
            ],
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on error (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_rest: object) -> None:
        if kind is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
