"""Subjects, stream names and headers that titan's services and their consumers agree on
(docs/messaging.md). One place names them; every other module imports from here."""

from __future__ import annotations

from typing import Final

CMD_STREAM: Final = "TITAN_CMD"
EVT_STREAM: Final = "TITAN_EVT"
DLQ_STREAM: Final = "TITAN_DLQ"
ADVISORY_STREAM: Final = "TITAN_ADVISORY"

CMD_PREFIX: Final = "titan.cmd"
EVT_PREFIX: Final = "titan.evt"
DLQ_PREFIX: Final = "titan.dlq"

# Headers the mirror puts on every record it publishes.
MSG_ID: Final = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE: Final = "Nats-Expected-Last-Sequence"
POSITION: Final = "Titan-Position"
STREAM_ID: Final = "Titan-Stream-Id"
VERSION: Final = "Titan-Version"
RECORD_TYPE: Final = "Titan-Type"
COMMAND_ID: Final = "Titan-Command-Id"
INTENT_ID: Final = "Titan-Intent-Id"
PHASE_ID: Final = "Titan-Phase-Id"
CHAIN_HASH: Final = "Titan-Hash"
PREV_HASH: Final = "Titan-Prev-Hash"
TRACEPARENT: Final = "traceparent"
TITAN_TRACEPARENT: Final = "Titan-Traceparent"
"""Some nats-server versions rewrite `traceparent` in stored messages: titan carries its own copy
(read first: adapters/nats/trace_headers.py)."""
TRACESTATE: Final = "tracestate"
"""W3C trace state, beside `traceparent` when a span has one (docs/tracing.md)."""


def token(text: str) -> str:
    """A subject token for an id: NATS splits subjects on `.` and gives `*`, `>` and whitespace a
    meaning, so those (and `%`) are percent-encoded; titan's ids never hold whitespace."""
    out = []
    for char in text:
        if char in ".*>%" or char.isspace():
            out.append(f"%{ord(char):02X}")
        else:
            out.append(char)
    return "".join(out)


def event_subject(account_id: str, type_name: str) -> str:
    """Where the mirror publishes a record: `titan.evt.<account>.<type>` (the type's own dots make
    tokens: `titan.evt.main.order.accepted.v1`; command records: `….command.recorded.v1`)."""
    return f"{EVT_PREFIX}.{token(account_id)}.{type_name}"


def command_subject(account_id: str, command_type: str) -> str:
    """Where a command is sent to intake: `titan.cmd.<account>.<command type>`."""
    return f"{CMD_PREFIX}.{token(account_id)}.{command_type}"


# Durable consumers titan's services use (declared in adapters/nats/streams.py).
INTAKE_CONSUMER: Final = "titan-intake"
"""The intake's pull consumer on TITAN_CMD."""
DLQ_ROUTER_CONSUMER: Final = "titan-dlq-router"
"""The DLQ router's pull consumer on TITAN_ADVISORY."""

# JetStream advisories TITAN_ADVISORY captures, so DLQ routing survives a restart of titan.
MAX_DELIVERIES_ADVISORY_PREFIX: Final = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
MSG_TERMINATED_ADVISORY_PREFIX: Final = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"

# Signed checkpoints of the ledger's head (docs/ledger.md, "Checkpoints"), kept on JetStream too.
CHECKPOINT_STREAM: Final = "TITAN_CHECKPOINTS"
CHECKPOINT_PREFIX: Final = "titan.checkpoint"
LEDGER_ID: Final = "Titan-Ledger-Id"
"""The header naming which ledger (its first record's hash) a checkpoint is about."""


def checkpoint_subject(ledger_id: str) -> str:
    """Where a ledger's signed checkpoints go: `titan.checkpoint.<ledger id>`."""
    return f"{CHECKPOINT_PREFIX}.{token(ledger_id)}"


# Intake (docs/messaging.md, "Intake").
REPLY_TO: Final = "Titan-Reply-To"
"""Where the intake answers a command: a JetStream-stored message's own reply subject is the
consumer's ack subject, so the sender names its inbox in this header instead."""
REPLY_PREFIX: Final = "_INBOX."
"""The only subjects the intake replies on: a reply can never land in one of titan's streams."""
REPLAY_OF: Final = "Titan-Replay-Of"
"""Set by `titan dlq replay`: the dead-letter entry a message re-submits."""


def untoken(text: str) -> str:
    """The id a subject token encodes (the inverse of `token`); raise ValueError on a bad escape."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%":
            code = text[index + 1 : index + 3]
            if len(code) != 2 or not all(c in "0123456789ABCDEF" for c in code):
                raise ValueError(f"bad escape {text[index:index + 3]!r} in subject token")
            out.append(chr(int(code, 16)))
            index += 3
        else:
            out.append(char)
            index += 1
    return "".join(out)


def parse_command_subject(subject: str) -> tuple[str, str]:
    """The account id and command type of `titan.cmd.<account>.<command type>`; raise ValueError."""
    prefix = CMD_PREFIX + "."
    if not subject.startswith(prefix):
        raise ValueError(f"subject {subject[:200]!r} is not under {prefix}")
    account, dot, command_type = subject[len(prefix) :].partition(".")
    if not account or not dot or not command_type:
        raise ValueError(f"subject {subject[:200]!r} is not {prefix}<account>.<command type>")
    account_id = untoken(account)
    if token(account_id) != account:
        # One spelling per account: `ma%69n` is not `main`, or subject permissions could be dodged.
        raise ValueError(f"subject token {account[:100]!r} is not how titan spells account {account_id[:100]!r}")
    return account_id, command_type


# The execution gateway (docs/messaging.md, "The execution gateway"): accepted orders and cancel
# requests leave for the execution engines on TITAN_EXEC.
EXEC_STREAM: Final = "TITAN_EXEC"
EXEC_PREFIX: Final = "titan.exec"
EXEC_PLACE: Final = "place"
EXEC_CANCEL: Final = "cancel"
EXEC_KINDS: Final = (EXEC_PLACE, EXEC_CANCEL)
ACCOUNT_ID: Final = "Titan-Account-Id"
ORDER_ID: Final = "Titan-Order-Id"
POLICY_HASH: Final = "Titan-Policy-Hash"
PAPER_VENUE: Final = "paper"
PAPER_CONSUMER: Final = "titan-paper"
"""The paper execution engine's pull consumer on TITAN_EXEC (filter `titan.exec.paper.>`)."""


def exec_subject(venue: str, kind: str) -> str:
    """Where the gateway sends an order to its venue's engine: `titan.exec.<venue>.place|cancel`."""
    if kind not in EXEC_KINDS:
        raise ValueError(f"an execution message is {' or '.join(EXEC_KINDS)}, not {kind!r}")
    return f"{EXEC_PREFIX}.{token(venue)}.{kind}"


def exec_filter(venue: str) -> str:
    """Every execution message for one venue: `titan.exec.<venue>.>` (an engine's filter)."""
    return f"{EXEC_PREFIX}.{token(venue)}.>"


def cancel_msg_id(order_id: str) -> str:
    """The `Nats-Msg-Id` of an order's cancel: `cancel.<order id>` (the place's is the order id)."""
    return f"cancel.{order_id}"
