"""One settings object, read from TITAN_* environment variables; every field has a default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_LEDGER_URL = "sqlite:///.titan/ledger.db"


class Settings(BaseSettings):
    """titan's configuration. The embedded default needs no server."""

    model_config = SettingsConfigDict(env_prefix="TITAN_", extra="ignore", frozen=True, env_ignore_empty=True)

    ledger_url: str = Field(
        DEFAULT_LEDGER_URL,
        description="Where the ledger lives: sqlite:///relative/path, sqlite:////absolute/path, "
        "sqlite:///:memory:, or postgresql://… (TITAN_LEDGER_URL)",
    )
    account_id: str = Field("main", description="The account commands default to (TITAN_ACCOUNT_ID)")
    core: Literal["auto", "compiled", "interpreted"] = Field(
        "auto",
        description="Which execution core decides: the mypyc-compiled one, the interpreted one, or "
        "compiled when it is built (TITAN_CORE)",
    )
    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS JetStream, for the mirror and intake (TITAN_NATS_URL)"
    )
