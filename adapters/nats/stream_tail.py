"""The mirror's checkpoint is the stream itself: the last message's headers say which ledger
position, with which chain hash, the stream holds last (docs/messaging.md, "the resume rule")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors
from nats.js.api import RawStreamMsg, StreamState
from nats.js.client import JetStreamContext

from commands.ports import LedgerUnreachable
from schemas.canonical import GENESIS_HASH

from . import subjects
from .pipelined_publisher import PublishError, WrongLastSequence


class MirrorError(Exception):
    """The mirror cannot go on without an operator: the stream and the ledger disagree."""


@dataclass(frozen=True, slots=True)
class StreamTail:
    """The last message of the mirror stream: its sequence and the record it holds."""

    seq: int
    position: int
    hash: str
    messages: int
    first_seq: int

    @property
    def empty(self) -> bool:
        """Whether the stream holds nothing yet."""
        return self.seq == 0


class StreamEmptied(Exception):
    """A stream used as a checkpoint holds no message although it held some: they were removed."""

    def __init__(self, stream: str, last_seq: int) -> None:
        super().__init__(f"stream {stream} is empty but its last sequence is {last_seq}: its messages were removed")
        self.stream = stream
        self.last_seq = last_seq


async def last_message(js: JetStreamContext, stream: str) -> tuple[StreamState, RawStreamMsg | None]:
    """A stream's state and its last message (stream info, then a get by sequence), None when it
    never held one; StreamEmptied when its messages were removed."""
    info = await js.stream_info(stream)
    state = info.state
    if state.last_seq == 0 or state.messages == 0:
        if state.last_seq != 0:
            raise StreamEmptied(stream, state.last_seq)
        return state, None
    return state, await js.get_msg(stream, seq=state.last_seq, direct=bool(info.config.allow_direct))


async def read_tail(js: JetStreamContext, stream: str = subjects.EVT_STREAM) -> StreamTail:
    """Read the stream's last message and its headers."""
    try:
        state, message = await last_message(js, stream)
    except StreamEmptied as emptied:
        raise MirrorError(f"{emptied}, so it no longer says where the mirror stands; restore or recreate it") from None
    if message is None:
        return StreamTail(0, 0, GENESIS_HASH, 0, state.first_seq)
    headers = message.headers or {}
    position_text = headers.get(subjects.POSITION)
    chain_hash = headers.get(subjects.CHAIN_HASH)
    if not position_text or not position_text.isdigit() or not chain_hash:
        raise MirrorError(
            f"the last message of {stream} (sequence {state.last_seq}, subject {message.subject}) has "
            f"no {subjects.POSITION}/{subjects.CHAIN_HASH} headers: it was not written by the relay"
        )
    return StreamTail(state.last_seq, int(position_text), chain_hash, state.messages, state.first_seq)


RETRIED_ERRORS: Final = (
    PublishError,
    LedgerUnreachable,
    OSError,
    TimeoutError,
    nats.errors.Error,
    nats.js.errors.Error,
)
"""What a stream-checkpointed publisher (the relay, the gateway) rides out (NATS or PostgreSQL lost,
a publish refused): it reports itself not ready, backs off, re-reads the stream's tail and resumes."""
MAX_BACKOFF_S: Final = 5.0


async def run_sessions(
    session: Callable[[], Awaitable[bool]],
    stop: asyncio.Event,
    on_retry: Callable[[BaseException, float], None],
) -> None:
    """Run `session` (resume after the stream's tail, publish; True when done) until done or
    `stop`; after an error of RETRIED_ERRORS, `on_retry(error, backoff)` reports it and the next
    session starts after the backoff (0.1 s doubling to 5 s; at once again after a publish that
    lost a race on the expected last sequence). Other errors end it."""
    backoff = 0.1
    while not stop.is_set():
        try:
            if await session():
                return
        except RETRIED_ERRORS as error:
            on_retry(error, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = 0.1 if isinstance(error, WrongLastSequence) else min(backoff * 2, MAX_BACKOFF_S)
