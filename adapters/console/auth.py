"""Console authentication and roles (docs/console.md, "Tokens and roles").

Tokens are bearer tokens: 32 random bytes, URL-safe base64, given to a person once. Only their
SHA-256 is kept (a token is as long as a key, so a fast hash is enough: there is nothing to guess
by brute force). A token line names its subject (recorded as the actor of every action taken with
it) and its roles:

    <subject> <role>[,<role>...] sha256:<64 hex>

from a file (`TITAN_CONSOLE_TOKENS`, re-read when it changes, so removing a line revokes the token
within a second, mid-subscription too) or from the environment (`TITAN_CONSOLE_TOKEN_LINES`,
lines separated by `;`). With neither, the console makes one operator token for this run and
prints a login URL that carries it: it is never open.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .ports import ConsoleError

ROLES: Final = ("viewer", "operator", "risk", "auditor")

READ: Final = "read"
EXPLAIN: Final = "explain"
EVENTS: Final = "events"
OPERATE: Final = "operate"
DLQ: Final = "dlq"
POLICY: Final = "policy"

PERMISSIONS: Final[Mapping[str, frozenset[str]]] = {
    READ: frozenset(ROLES),
    EXPLAIN: frozenset({"operator", "risk", "auditor"}),
    EVENTS: frozenset({"auditor"}),
    OPERATE: frozenset({"operator"}),
    DLQ: frozenset({"operator"}),
    POLICY: frozenset({"risk"}),
}
"""Which roles hold each permission. Reading the state is everyone's; explaining a decision is for
those who act on or audit it; the raw event log is the auditor's; halting and the DLQ are the
operator's; activating a policy is the risk officer's."""

SUBJECT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_HASH: Final = re.compile(r"^sha256:([0-9a-f]{64})$")
RELOAD_S: Final = 1.0


class TokenFileError(ValueError):
    """A token line that does not parse: names the file and line, and what is accepted."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the token's subject and roles."""

    subject: str
    roles: frozenset[str]

    def may(self, permission: str) -> bool:
        return bool(self.roles & PERMISSIONS[permission])


def token_hash(token: str) -> str:
    """The stored form of a token."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh bearer token."""
    return secrets.token_urlsafe(32)


def token_line(subject: str, roles: Iterable[str], token: str) -> str:
    """The line that grants a token (what `titan console token` appends)."""
    return f"{subject} {','.join(roles)} {token_hash(token)}"


def parse_lines(lines: Iterable[str], origin: str) -> dict[str, Principal]:
    """Token hashes to principals; raise TokenFileError naming `origin:line`."""
    book: dict[str, Principal] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{origin}:{number}"
        if len(parts) != 3:
            raise TokenFileError(f"{where}: expected `<subject> <role>[,<role>] sha256:<64 hex>`, got {len(parts)} fields")
        subject, roles_text, stored = parts
        if not SUBJECT.match(subject):
            raise TokenFileError(f"{where}: subject {subject[:40]!r} is not an actor name (letters, digits and . _ : @ -, at most 128)")
        roles = frozenset(roles_text.split(","))
        unknown = sorted(roles - set(ROLES))
        if unknown or not roles:
            raise TokenFileError(f"{where}: unknown role {', '.join(unknown) or '(none)'}; accepted: {', '.join(ROLES)}")
        match = _HASH.match(stored)
        if match is None:
            raise TokenFileError(f"{where}: the token must be stored hashed, as sha256:<64 lowercase hex>")
        if stored in book:
            raise TokenFileError(f"{where}: this token hash is granted twice")
        book[stored] = Principal(subject, roles)
    return book


class TokenBook:
    """The tokens that may use the console; `authenticate` re-reads a changed file (revocation)."""

    def __init__(self, *, path: Path | None = None, lines: str | None = None, generated: str | None = None) -> None:
        self.path = path
        self._env = parse_lines(lines.split(";"), "TITAN_CONSOLE_TOKEN_LINES") if lines else {}
        self.generated = generated
        self._generated = {token_hash(generated): Principal("console-admin", frozenset(ROLES))} if generated else {}
        self._file: dict[str, Principal] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        if path is not None:
            self._reload(force=True)

    @classmethod
    def configured(cls, path: str | None, lines: str | None) -> TokenBook:
        """The configured tokens, or a generated one when none are (never an open console)."""
        if path is None and not lines:
            return cls(generated=new_token())
        return cls(path=Path(path) if path else None, lines=lines)

    def authenticate(self, header_or_token: str | None) -> Principal:
        """The principal of a bearer token (`Bearer <token>` or the bare token); raise
        ConsoleError UNAUTHENTICATED (401)."""
        if not header_or_token:
            raise ConsoleError("UNAUTHENTICATED", "no token: send `Authorization: Bearer <token>`", 401)
        token = header_or_token.removeprefix("Bearer ").strip()
        if not token or len(token) > 512:
            raise ConsoleError("UNAUTHENTICATED", "the bearer token is empty or too long", 401)
        self._reload()
        stored = token_hash(token)
        for book in (self._file, self._env, self._generated):
            for candidate, principal in book.items():
                if hmac.compare_digest(candidate, stored):
                    return principal
        raise ConsoleError("UNAUTHENTICATED", "unknown or revoked token", 401)

    def _reload(self, *, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked < RELOAD_S:
                return
            self._checked = now
            try:
                info = os.stat(self.path)
            except OSError as error:
                if force:
                    raise TokenFileError(f"cannot read token file {str(self.path)!r}: {error.strerror}") from None
                self._file, self._stamp = {}, None  # the file is gone: its tokens are revoked
                return
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return
            try:
                book = parse_lines(self.path.read_text(encoding="utf-8").splitlines(), str(self.path))
            except (OSError, UnicodeDecodeError, TokenFileError) as error:
                if force:
                    raise TokenFileError(str(error)) from None
                self._file, self._stamp = {}, None  # an unreadable file grants nothing
                return
            self._file, self._stamp = book, stamp


def require(principal: Principal, permission: str, what: str) -> None:
    """Raise ConsoleError FORBIDDEN (403) unless the principal holds the permission."""
    if not principal.may(permission):
        roles = ", ".join(sorted(PERMISSIONS[permission]))
        raise ConsoleError(
            "FORBIDDEN", f"{what} needs the role {roles}; {principal.subject} has {', '.join(sorted(principal.roles))}", 403
        )
