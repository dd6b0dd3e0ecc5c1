"""Signed checkpoints on JetStream: publish one checkpoint line to TITAN_CHECKPOINTS, read a
ledger's lines back in stream order (docs/ledger.md, "The checkpoint mirror"; docs/messaging.md,
"Checkpoints").

A line is published byte for byte as the checkpoint file holds it (canonical JSON, no newline) on
`titan.checkpoint.<ledger id>`, with `Nats-Msg-Id` `<ledger id>:<position>` (a retried publish is
stored once) and the position, hash and ledger id as headers. What the lines prove is checked by
replay/checkpoints.py, exactly as for the file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from . import streams, subjects

PUBLISH_TIMEOUT_S: Final = 5.0
PUBLISH_ATTEMPTS: Final = 3
"""A publish that timed out has an unknown outcome: it is sent again with the same message id."""
FETCH_BATCH: Final = 500
FETCH_TIMEOUT_S: Final = 5.0


class CheckpointStreamError(Exception):
    """TITAN_CHECKPOINTS is missing or differs from titan's spec (`titan nats apply` fixes it)."""


@dataclass(frozen=True, slots=True)
class Published:
    """Where a checkpoint line went: its subject, its stream sequence, whether it was a duplicate."""

    stream: str
    subject: str
    seq: int
    duplicate: bool
    """True: the stream already held a line with this message id (this ledger and position)."""


@dataclass(frozen=True, slots=True)
class MirroredLine:
    """One checkpoint line as the stream holds it."""

    seq: int
    subject: str
    data: bytes


def message_id(ledger_id: str, position: int) -> str:
    """A checkpoint's `Nats-Msg-Id`: `<ledger id>:<position>`."""
    return f"{ledger_id}:{position}"


async def require_stream(js: JetStreamContext, window_s: float) -> None:
    """Return when TITAN_CHECKPOINTS exists as declared; else raise CheckpointStreamError naming
    every difference on one line."""
    spec = streams.Spec((streams.checkpoint_stream(window_s),), ())
    drifts = await streams.verify(js, spec)
    if drifts:
        listed = "; ".join(str(drift) for drift in drifts)
        raise CheckpointStreamError(f"{listed}: run `titan nats apply`")


async def publish_checkpoint(
    js: JetStreamContext,
    line: bytes,
    *,
    ledger_id: str,
    position: int,
    chain_hash: str,
    timeout_s: float = PUBLISH_TIMEOUT_S,
) -> Published:
    """Publish one signed checkpoint line, as it is, to `titan.checkpoint.<ledger id>`.

    A timeout is retried with the same message id (the stream stores it once); the last timeout
    propagates (NATS lost: connection.LOST)."""
    if b"\n" in line:
        raise ValueError("a checkpoint line must not contain a newline")
    subject = subjects.checkpoint_subject(ledger_id)
    headers = {
        subjects.MSG_ID: message_id(ledger_id, position),
        subjects.POSITION: str(position),
        subjects.CHAIN_HASH: chain_hash,
        subjects.LEDGER_ID: ledger_id,
    }
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            ack = await js.publish(
                subject, line, timeout=timeout_s, stream=subjects.CHECKPOINT_STREAM, headers=dict(headers)
            )
        except nats.errors.TimeoutError:
            if attempt == PUBLISH_ATTEMPTS:
                raise
            continue
        return Published(ack.stream, subject, ack.seq, bool(ack.duplicate))
    raise AssertionError("unreachable")  # pragma: no cover


async def read_checkpoints(js: JetStreamContext, ledger_id: str | None) -> list[MirroredLine]:
    """Every checkpoint line of one ledger (None: of every ledger) in stream order, as the stream
    held them when the read began; CheckpointStreamError when TITAN_CHECKPOINTS does not exist."""
    try:
        await js.stream_info(subjects.CHECKPOINT_STREAM)
    except nats.js.errors.NotFoundError as error:
        raise CheckpointStreamError(
            f"stream {subjects.CHECKPOINT_STREAM} does not exist: run `titan nats apply`"
        ) from error
    subject = (
        subjects.checkpoint_subject(ledger_id) if ledger_id is not None else f"{subjects.CHECKPOINT_PREFIX}.>"
    )
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60.0,
        max_ack_pending=-1,
        filter_subject=subject,
    )
    subscription = await js.pull_subscribe(subject, stream=subjects.CHECKPOINT_STREAM, config=config)
    try:
        remaining = (await subscription.consumer_info()).num_pending or 0
        lines: list[MirroredLine] = []
        while remaining > 0:
            batch = await subscription.fetch(min(remaining, FETCH_BATCH), timeout=FETCH_TIMEOUT_S)
            for message in batch:
                lines.append(MirroredLine(message.metadata.sequence.stream, message.subject, message.data))
            remaining -= len(batch)
        return lines
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
