"""Connecting to NATS from titan's settings: URL, credentials, TLS, a bounded wait at start.

nats-py's own start-up loop retries every server up to `max_reconnect_attempts` times (60 by default,
2 s apart: two minutes), even with `allow_reconnect=False`. A service must instead fail at once with
the URL (exit 3), so the first connect gets two quick attempts inside `nats_connect_timeout_s`; once
connected, reconnecting is switched on so a running service rides out a NATS restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from adapters.redact import MASK, redact
from commands.ports import LedgerUnreachable
from infra.settings import Settings

_log = logging.getLogger(__name__)

RECONNECT_WAIT_S: Final = 2.0
"""Pause between reconnect attempts once a service has connected (nats-py's default)."""
CLOSE_TIMEOUT_S: Final = 5.0


class NatsUnreachable(LedgerUnreachable):
    """NATS cannot be reached, refused the login, or JetStream does not answer (CLI exit 3)."""


class NatsSettingsError(ValueError):
    """The NATS settings cannot work as given (CLI exit 2): a missing file, two kinds of credentials."""


def display_url(url: str) -> str:
    """The server URL(s) as they may be printed: passwords and bare tokens replaced by ***."""
    return ",".join(_display_one(part.strip()) for part in url.split(",") if part.strip())


def _display_one(url: str) -> str:
    shown = redact(url)
    try:
        parts = urlsplit(shown if "://" in shown else f"nats://{shown}")
    except ValueError:
        return MASK
    userinfo, at, _host = parts.netloc.rpartition("@")
    if at and ":" not in userinfo:  # nats://TOKEN@host: the user part alone is a token
        return shown.replace(f"{userinfo}@", f"{MASK}@", 1)
    return shown


def servers(url: str) -> list[str]:
    """The server URLs in a TITAN_NATS_URL (comma-separated for a cluster)."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise NatsSettingsError("TITAN_NATS_URL is empty: give a URL such as nats://127.0.0.1:4222")
    return found


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context the settings ask for, or None (nats-py then makes one for a tls:// URL)."""
    ca, cert, key = settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise NatsSettingsError("TITAN_NATS_TLS_CERT and TITAN_NATS_TLS_KEY go together: set both or neither")
    for name, path in (("TITAN_NATS_TLS_CA", ca), ("TITAN_NATS_TLS_CERT", cert), ("TITAN_NATS_TLS_KEY", key)):
        if path is not None and not Path(path).is_file():
            raise NatsSettingsError(f"{name}={path}: no such file")
    try:
        context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=ca)
        if cert is not None and key is not None:
            context.load_cert_chain(certfile=cert, keyfile=key)
    except (ssl.SSLError, OSError) as error:
        raise NatsSettingsError(f"the NATS TLS files cannot be loaded: {error}") from error
    return context


def credentials(settings: Settings) -> dict[str, Any]:
    """nats-py's connect() keywords for the configured credentials (at most one kind)."""
    kinds = [
        name
        for name, present in (
            (
                "TITAN_NATS_USER/TITAN_NATS_PASSWORD",
                settings.nats_user is not None or settings.nats_password is not None,
            ),
            ("TITAN_NATS_TOKEN", settings.nats_token is not None),
            ("TITAN_NATS_CREDS_FILE", settings.nats_creds_file is not None),
        )
        if present
    ]
    if len(kinds) > 1:
        raise NatsSettingsError(f"NATS credentials: set one of {', '.join(kinds)}, not several")
    options: dict[str, Any] = {}
    if settings.nats_user is not None or settings.nats_password is not None:
        if settings.nats_user is None or settings.nats_password is None:
            raise NatsSettingsError("TITAN_NATS_USER and TITAN_NATS_PASSWORD go together: set both")
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password.get_secret_value()
    if settings.nats_token is not None:
        options["token"] = settings.nats_token.get_secret_value()
    if settings.nats_creds_file is not None:
        if not Path(settings.nats_creds_file).is_file():
            raise NatsSettingsError(f"TITAN_NATS_CREDS_FILE={settings.nats_creds_file}: no such file")
        if importlib.util.find_spec("nkeys") is None:
            raise NatsSettingsError(
                "TITAN_NATS_CREDS_FILE needs the nkeys package: pip install 'nats-py[nkeys]'"
            )
        options["user_credentials"] = settings.nats_creds_file
    return options


@dataclass
class _Errors:
    """What nats-py reported while connecting (its error callback), to name the cause once."""

    seen: list[BaseException] = field(default_factory=list)
    connected: bool = False

    async def report(self, error: Exception) -> None:
        if self.connected:
            _log.warning("NATS: %s", _describe(error))
        else:
            self.seen.append(error)


def _describe(error: BaseException) -> str:
    if isinstance(error, nats.errors.NoServersError):
        return "no server answered"
    if isinstance(error, (TimeoutError, nats.errors.TimeoutError)):
        return "timed out"
    if isinstance(error, nats.errors.AuthorizationError) or "authorization" in str(error).lower():
        return "the server refused the login (authorization violation)"
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


async def connect(settings: Settings, *, name: str = "titan", reconnect: bool = True) -> Client:
    """A connection to NATS, or NatsUnreachable naming the URL (password masked) within the
    connect timeout; NatsSettingsError when the settings cannot work."""
    urls = servers(settings.nats_url)
    options = credentials(settings)
    tls = tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    errors = _Errors()
    timeout_s = settings.nats_connect_timeout_s
    try:
        client = await asyncio.wait_for(
            nats.connect(
                urls,
                name=name,
                error_cb=errors.report,
                allow_reconnect=False,
                connect_timeout=max(1, int(timeout_s)),
                max_reconnect_attempts=1,  # 0 would mean "forever" in nats-py's server pool
                reconnect_time_wait=0,
                **options,
            ),
            timeout=timeout_s,
        )
    except (TimeoutError, OSError, nats.errors.Error) as error:
        cause = errors.seen[-1] if errors.seen and isinstance(error, nats.errors.NoServersError) else error
        raise NatsUnreachable(
            f"NATS at {display_url(settings.nats_url)} is unreachable: {_describe(cause)}"
        ) from error
    errors.connected = True
    if reconnect:
        # Start-up is over: from now on a lost server is retried, not fatal (see the module docstring).
        client.options["allow_reconnect"] = True
        client.options["max_reconnect_attempts"] = -1
        client.options["reconnect_time_wait"] = RECONNECT_WAIT_S
    return client


async def close(client: Client) -> None:
    """Close the connection without waiting longer than a few seconds for a lost server."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), timeout=CLOSE_TIMEOUT_S)


LOST: Final = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,
)
"""What a JetStream request raises when NATS or JetStream stopped answering."""


@contextlib.asynccontextmanager
async def connected(settings: Settings, *, name: str = "titan") -> AsyncIterator[Client]:
    """A connection for the block, closed after it; NATS lost or JetStream silent inside the block
    becomes NatsUnreachable naming the URL."""
    client = await connect(settings, name=name, reconnect=False)
    try:
        yield client
    except LOST as error:
        reason = (
            "JetStream is not enabled or not answering"
            if isinstance(error, (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError))
            else _describe(error)
        )
        raise NatsUnreachable(f"NATS at {display_url(settings.nats_url)}: {reason}") from error
    finally:
        await close(client)
