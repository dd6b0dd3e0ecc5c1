"""`titan ledger keygen|checkpoint [--mirror]` and `titan ledger verify --checkpoints` /
`--checkpoints-mirror`: signed checkpoints, in a file and on JetStream (TITAN_CHECKPOINTS).

Exit codes: 0 ok; 1 a check failed (the ledger does not extend the last checkpoint, a checkpoint
names a truncation or a forgery, a line's signature does not verify, the file lacks a line the
mirror holds, TITAN_CHECKPOINTS is missing or differs from its spec); 2 bad input (no key, an
existing key file, no checkpoint log, an empty ledger, bad NATS settings, no mirrored checkpoint);
3 the ledger's server or NATS unreachable (a checkpoint already appended to the file stays there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.markup import escape

from adapters.checkpoint_file import (
    CheckpointFileError,
    open_log,
    public_key_hex,
    read_lines,
    write_new_key,
)
from commands.ports import Ledger, LedgerError, LedgerUnreachable
from infra.checkpointing import (
    CheckpointError,
    checkpoint_paths,
    log_for,
    verify_log,
    verifying_key,
    write_checkpoint,
)
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_UNREACHABLE,
    JsonOpt,
    LedgerOpt,
    err,
    fail,
    open_or_fail,
    out,
    print_json,
    settings_for,
)
from infra.settings import Settings
from replay.checkpoints import Checkpoint, CheckpointReport, key_id, verify_checkpoints

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from adapters.nats.checkpoints import MirroredLine, Published

T = TypeVar("T")

SHOWN_FINDINGS = 20


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `ledger keygen` and `ledger checkpoint`."""
    groups["ledger"].command("keygen")(keygen_cmd)
    groups["ledger"].command("checkpoint")(checkpoint_cmd)


def _fail(error: CheckpointError) -> NoReturn:
    fail(str(error), error.exit_code)


def keygen_cmd(
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the private key (default: TITAN_CHECKPOINT_KEY, else checkpoint.key beside the ledger)."),
    ] = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an Ed25519 checkpoint key (a new 0600 file) and print its public key."""
    path = out_path or checkpoint_paths(settings_for(ledger)).key
    if path is None:
        fail("an in-memory ledger has no default key path: pass --out PATH", EXIT_BAD_INPUT)
    try:
        public = write_new_key(path)
    except CheckpointFileError as error:
        fail(str(error), EXIT_BAD_INPUT)
    result = {"private_key": str(path), "public_key": public_key_hex(public), "key_id": key_id(public)}
    if as_json:
        print_json(result)
        return
    out.print(f"wrote private key {path} (mode 0600; keep it off the database's host if you can)")
    out.print(f"public key {result['public_key']} (key id {result['key_id']})")
    out.print(f"verify anywhere with: TITAN_CHECKPOINT_PUBLIC_KEY={result['public_key']} titan ledger verify --checkpoints FILE")


def checkpoint_cmd(
    ledger: LedgerOpt = None,
    key: Annotated[Path | None, typer.Option("--key", help="The private key (default: TITAN_CHECKPOINT_KEY, else beside the ledger).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="The checkpoint log (default: TITAN_CHECKPOINT_FILE, else beside the ledger).")] = None,
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror",
            help="Then publish the same signed line to titan.checkpoint.<ledger id> on TITAN_CHECKPOINTS "
            "(TITAN_NATS_URL); NATS unreachable exits 3 and the file keeps the checkpoint.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Sign the ledger's head and append it to the checkpoint log, once the chain since the last
    checkpoint is checked; with --mirror, also publish that line to JetStream."""
    settings = settings_for(ledger)
    store = open_or_fail(settings, create=False)
    try:
        checkpoint = write_checkpoint(store, settings, key=key, log=file)
    except CheckpointError as error:
        _fail(error)
    except LedgerError as error:
        fail(str(error), EXIT_UNREACHABLE if isinstance(error, LedgerUnreachable) else EXIT_BAD_INPUT)
    finally:
        store.close()
    assert checkpoint is not None  # only `only_if_moved` writes nothing
    log = file or checkpoint_paths(settings).log
    assert log is not None  # write_checkpoint refused an in-memory ledger without a file
    appended = (
        f"checkpoint: position {checkpoint.position} hash {checkpoint.hash} "
        f"({checkpoint.record_count} records) appended to {log}"
    )
    published = None
    if mirror:
        if not as_json:
            out.print(appended)
        published = mirror_checkpoint(settings, checkpoint, log)
    if as_json:
        document: dict[str, Any] = {"file": str(log), "checkpoint": checkpoint.payload()}
        if published is not None:
            document["mirror"] = {
                "stream": published.stream,
                "subject": published.subject,
                "seq": published.seq,
                "duplicate": published.duplicate,
            }
        print_json(document)
        return
    if published is None:
        out.print(appended)
        return
    if published.duplicate:
        out.print(
            escape(
                f"mirror: {published.stream} already holds a checkpoint of position {checkpoint.position} "
                f"(sequence {published.seq}, within the duplicate window); this line stays in the file only"
            )
        )
    else:
        out.print(escape(f"mirrored to {published.subject} on {published.stream} (sequence {published.seq})"))


# --- the checkpoint mirror on JetStream ---------------------------------------------------------


def _nats(settings: Settings, work: Callable[[JetStreamContext], Awaitable[T]], *, kept: Path | None = None) -> T:
    """Run work on a JetStream context from the settings; exit 3 when NATS is unreachable (naming
    the URL), 2 for bad NATS settings, 1 when TITAN_CHECKPOINTS is missing or differs from its spec.
    `kept`: the file that holds the checkpoint although it was not mirrored (said on failure)."""
    from adapters.nats.checkpoints import CheckpointStreamError
    from adapters.nats.connection import display_url
    from infra.cli.nats import on_jetstream

    note = "" if kept is None else f"; the checkpoint stays in {kept} (run again to mirror one)"
    try:
        return on_jetstream(settings, work, name="titan ledger checkpoints", note=note)
    except CheckpointStreamError as error:
        fail(f"NATS at {display_url(settings.nats_url)}: {error}{note}", EXIT_CHECK_FAILED)


def signed_line(log: Path, checkpoint: Checkpoint) -> bytes:
    """The line the file holds for this checkpoint, byte for byte (its last line, unless another
    writer appended since); exit 2 when the file cannot be read or no longer holds it."""
    wanted = checkpoint.payload()
    try:
        with open_log(log) as opened:
            last = opened.last_line()
        if last is not None and _payload_of(last) == wanted:
            return last
        found = [raw for raw in read_lines(log) if _payload_of(raw) == wanted]
    except CheckpointFileError as error:
        fail(str(error), EXIT_BAD_INPUT)
    if not found:
        fail(f"checkpoint log {str(log)!r} no longer holds the line just appended: not mirroring it", EXIT_CHECK_FAILED)
    return found[-1]


def _payload_of(raw: bytes) -> object:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return document.get("payload") if isinstance(document, dict) else None


def mirror_checkpoint(settings: Settings, checkpoint: Checkpoint, log: Path) -> Published:
    """Publish the file's line of this checkpoint to TITAN_CHECKPOINTS (after checking the stream
    is as declared); exits as `_nats` does, the file keeping the checkpoint."""
    from adapters.nats import checkpoints as mirrored

    line = signed_line(log, checkpoint)

    async def work(js: JetStreamContext) -> Published:
        await mirrored.require_stream(js, settings.nats_duplicate_window_s)
        return await mirrored.publish_checkpoint(
            js, line, ledger_id=checkpoint.ledger_id, position=checkpoint.position, chain_hash=checkpoint.hash
        )

    return _nats(settings, work, kept=log)


@dataclass(slots=True)
class MirrorCheckpoints:
    """The ledger checked against the checkpoints TITAN_CHECKPOINTS holds (and the file against them)."""

    stream: str
    subject: str
    sequences: list[int]
    """The stream sequence of each line: line N of the report is `sequences[N - 1]`."""
    report: CheckpointReport
    file: str | None = None
    """The checkpoint log compared with the mirror (None: not compared)."""
    file_findings: int = 0

    @property
    def ok(self) -> bool:
        """True when every mirrored checkpoint verifies, agrees with the ledger and is in the file."""
        return self.report.ok

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (`titan ledger verify --checkpoints-mirror --json`)."""
        return {
            **self.report.as_dict(),
            "stream": self.stream,
            "subject": self.subject,
            "sequences": self.sequences,
            "compared_with_file": self.file,
        }


def check_checkpoint_mirror(store: Ledger, settings: Settings, file: Path | None) -> MirrorCheckpoints:
    """The ledger checked against this ledger's checkpoints on TITAN_CHECKPOINTS, with the same
    check as the file's (an empty ledger: against every ledger's, which then name it truncated);
    with `file`, also every mirrored line the file lacks or holds differently."""
    from adapters.nats import checkpoints as mirrored
    from adapters.nats import subjects
    from adapters.nats.connection import display_url
    from replay.checkpoint_mirror import compare_file_with_mirror

    try:
        key = verifying_key(settings)
    except CheckpointError as error:
        _fail(error)
    first = store.read_all(0, 1)
    ledger_id = str(first[0].envelope.get("hash")) if first else None
    subject = subjects.checkpoint_subject(ledger_id) if ledger_id is not None else f"{subjects.CHECKPOINT_PREFIX}.>"

    async def work(js: JetStreamContext) -> list[MirroredLine]:
        return await mirrored.read_checkpoints(js, ledger_id)

    lines = _nats(settings, work)
    if not lines:
        which = "this ledger" if ledger_id is None else f"this ledger (first record hash {ledger_id})"
        fail(
            f"{subjects.CHECKPOINT_STREAM} on NATS at {display_url(settings.nats_url)} holds no checkpoints of "
            f"{which} ({subject}): nothing to check the ledger against (write one with "
            "`titan ledger checkpoint --mirror`)",
            EXIT_BAD_INPUT,
        )
    data = [line.data for line in lines]
    report = verify_checkpoints(data, store, key)
    result = MirrorCheckpoints(subjects.CHECKPOINT_STREAM, subject, [line.seq for line in lines], report)
    if file is not None:
        try:
            differences = compare_file_with_mirror(read_lines(file), data, key)
        except CheckpointFileError as error:
            fail(str(error), EXIT_BAD_INPUT)
        report.findings.extend(differences)
        result.file = str(file)
        result.file_findings = len(differences)
    return result


def print_checkpoint_mirror_report(result: MirrorCheckpoints) -> None:
    """One line when the mirrored checkpoints hold; else one line per finding (the first few), each
    naming the stream sequence of its line."""
    report = result.report
    if report.ok:
        last = report.last
        where = "" if last is None else f", the last at position {last.position} ({last.hash})"
        held = "" if result.file is None else f"; {result.file} holds every one"
        plural = report.checkpoints != 1
        out.print(
            escape(
                f"checkpoints mirror ok: {report.checkpoints} signed checkpoint{'s' if plural else ''} on "
                f"{result.stream} ({result.subject}) agree{'' if plural else 's'} with the ledger{where}{held}"
            )
        )
        return
    for finding in report.findings[:SHOWN_FINDINGS]:
        seq = ""
        if finding.line is not None and 0 < finding.line <= len(result.sequences):
            seq = f" ({result.stream} sequence {result.sequences[finding.line - 1]})"
        err.print(f"[bold red]checkpoints mirror:[/] {escape(finding.message + seq)}")
    if len(report.findings) > SHOWN_FINDINGS:
        err.print(f"… and {len(report.findings) - SHOWN_FINDINGS} more (--json lists every one)")


def check_checkpoints(store: Ledger, settings: Settings, given: str | None) -> CheckpointReport:
    """The ledger checked against its checkpoint log, or exit 2 when the log or key is unusable."""
    try:
        return verify_log(store, log_for(settings, given), verifying_key(settings))
    except CheckpointError as error:
        _fail(error)


def print_checkpoint_report(report: CheckpointReport) -> None:
    """One line when the checkpoints hold; else one line per finding (the first few)."""
    if report.ok:
        last = report.last
        where = "" if last is None else f", the last at position {last.position} ({last.hash})"
        out.print(
            f"checkpoints ok: {report.checkpoints} signed checkpoint{'s' if report.checkpoints != 1 else ''} "
            f"agree{'s' if report.checkpoints == 1 else ''} with the ledger{where}; "
            f"the ledger ends at {report.ledger_end}"
        )
        return
    for finding in report.findings[:SHOWN_FINDINGS]:
        err.print(f"[bold red]checkpoints:[/] {finding.message}")
    if len(report.findings) > SHOWN_FINDINGS:
        err.print(f"… and {len(report.findings) - SHOWN_FINDINGS} more (--json lists every one)")
