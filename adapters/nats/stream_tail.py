"""The mirror's checkpoint is the stream itself: the last message's headers say which ledger
position, with which chain hash, the stream holds last (docs/messaging.md, "the resume rule")."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.client import JetStreamContext

from schemas.canonical import GENESIS_HASH

from . import subjects


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


async def read_tail(js: JetStreamContext, stream: str = subjects.EVT_STREAM) -> StreamTail:
    """Read the stream's last message (stream info, then a get by sequence) and its headers."""
    info = await js.stream_info(stream)
    state = info.state
    if state.last_seq == 0 or state.messages == 0:
        if state.last_seq != 0:
            raise MirrorError(
                f"stream {stream} is empty but its last sequence is {state.last_seq}: its messages "
                "were removed, so it no longer says where the mirror stands; restore or recreate it"
            )
        return StreamTail(0, 0, GENESIS_HASH, 0, state.first_seq)
    message = await js.get_msg(stream, seq=state.last_seq, direct=bool(info.config.allow_direct))
    headers = message.headers or {}
    position_text = headers.get(subjects.POSITION)
    chain_hash = headers.get(subjects.CHAIN_HASH)
    if not position_text or not position_text.isdigit() or not chain_hash:
        raise MirrorError(
            f"the last message of {stream} (sequence {state.last_seq}, subject {message.subject}) has "
            f"no {subjects.POSITION}/{subjects.CHAIN_HASH} headers: it was not written by the relay"
        )
    return StreamTail(state.last_seq, int(position_text), chain_hash, state.messages, state.first_seq)
