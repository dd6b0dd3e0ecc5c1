"""Tampering with a ledger behind titan's back, as the checkpoint tests need it (both stores).

`Tamperer(url)` edits a SQLite file with sqlite3 or a PostgreSQL database as a superuser with
the append-only triggers switched off (`session_replication_role = replica`), exactly as
issue 9 describes the attack: delete the whole last command and move the anchor back; then
seal records oneself and push the anchor.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from commands.chain import CHAIN_FIELDS, seal
from schemas.canonical import canonical_bytes


@dataclass(frozen=True)
class Row:
    position: int
    stream_id: str
    version: int
    type: str
    envelope: dict[str, Any]


def sqlite_file(url: str) -> str | None:
    return url[len("sqlite:///") :] if url.startswith("sqlite:///") else None


class Tamperer:
    """Reads and rewrites a ledger's tables directly; `as_url` picks the role of the inserts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_file(url)

    # --- reading ------------------------------------------------------------------------------

    def rows(self) -> list[Row]:
        if self.path is not None:
            with sqlite3.connect(self.path) as connection:
                found = connection.execute(
                    "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events ORDER BY rowid"
                ).fetchall()
        else:
            with psycopg.connect(self.url) as connection:
                found = connection.execute(
                    "SELECT notification_id, originator_id, originator_version, topic, state "
                    "FROM stored_events ORDER BY notification_id"
                ).fetchall()
        return [Row(p, s, v, t, orjson.loads(bytes(state))) for p, s, v, t, state in found]

    def last_command(self) -> list[Row]:
        """Every record of the last decided command (they are the ledger's last records)."""
        rows = self.rows()
        command_id = rows[-1].envelope["command_id"]
        tail = []
        for row in reversed(rows):
            if row.envelope["command_id"] != command_id:
                break
            tail.append(row)
        return list(reversed(tail))

    # --- rewriting (as a superuser, triggers off) ---------------------------------------------

    def _superuser(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        if self.path is not None:
            with sqlite3.connect(self.path) as connection:
                for statement, params in statements:
                    connection.execute(statement.replace("%s", "?").replace("notification_id", "rowid"), params)
            return
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute("SET session_replication_role = replica")
            for statement, params in statements:
                connection.execute(statement, params)

    def truncate_last_command(self) -> tuple[list[Row], Row]:
        """Delete the last command's records and move the anchor back onto the record before
        them; return the deleted records and the new head."""
        rows = self.rows()
        deleted = self.last_command()
        head = rows[len(rows) - len(deleted) - 1]
        positions = [row.position for row in deleted]
        self._superuser(
            ("DELETE FROM stored_events WHERE notification_id >= %s", (positions[0],)),
            (
                "UPDATE titan_chain_head SET position = %s, hash = %s, record_count = %s WHERE id = 1",
                (head.position, head.envelope["hash"], len(rows) - len(deleted)),
            ),
        )
        return deleted, head

    def append_sealed(self, replacing: list[Row], after: Row, *, as_url: str | None = None) -> list[Row]:
        """Seal altered copies of records onto `after` oneself, insert them at the same positions
        and push the anchor, with the privileges of `as_url` (PostgreSQL) or of the file."""
        prev_hash = after.envelope["hash"]
        forged: list[Row] = []
        for row in replacing:
            body = {k: v for k, v in row.envelope.items() if k not in CHAIN_FIELDS}
            body["actor"] = "forger"
            sealed = seal(body, prev_hash)
            prev_hash = sealed["hash"]
            forged.append(Row(row.position, row.stream_id, row.version, row.type, sealed))
        count = len(self.rows()) + len(forged)
        last = forged[-1]
        if self.path is not None:
            with sqlite3.connect(self.path) as connection:
                for row in forged:
                    connection.execute(
                        "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?, ?)",
                        (row.position, row.stream_id, row.version, row.type, canonical_bytes(row.envelope)),
                    )
                connection.execute(
                    "UPDATE titan_chain_head SET position = ?, hash = ?, record_count = ? WHERE id = 1",
                    (last.position, last.envelope["hash"], count),
                )
            return forged
        with psycopg.connect(as_url or self.url) as connection:  # one transaction, committed on exit
            for row in forged:
                connection.execute(
                    "INSERT INTO stored_events (notification_id, originator_id, originator_version, topic, state) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (row.position, row.stream_id, row.version, row.type, canonical_bytes(row.envelope)),
                )
            connection.execute(
                "UPDATE titan_chain_head SET position = %s, hash = %s, record_count = %s WHERE id = 1",
                (last.position, last.envelope["hash"], count),
            )
        return forged


def tamper_line(line: bytes) -> bytes:
    """A checkpoint line with one digit of its signed position changed (the signature kept)."""
    document = orjson.loads(line)
    document["payload"]["position"] += 1
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
