"""One settings object, read from TITAN_* environment variables; every field has a default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
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
    account_id: str = Field(
        "main",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$",
        description="The account commands default to: letters, digits and . _ : @ -, at most 128 "
        "characters (TITAN_ACCOUNT_ID)",
    )
    core: Literal["auto", "compiled", "interpreted"] = Field(
        "auto",
        description="Which execution core decides: the mypyc-compiled one, the interpreted one, or "
        "compiled when it is built (TITAN_CORE)",
    )
    snapshot_every: int = Field(
        1000,
        ge=0,
        le=1_000_000_000,
        description="A group-commit writer snapshots its account's state beside the ledger every this "
        "many events and when it stops, and starts from the newest trusted snapshot; 0: no snapshots "
        "written or read by writers (TITAN_SNAPSHOT_EVERY)",
    )
    max_future_skew_s: int = Field(
        300,
        ge=0,
        le=86_400,
        description="`titan submit` refuses a command stamped more than this many seconds after this "
        "machine's clock (TITAN_MAX_FUTURE_SKEW_S)",
    )
    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS JetStream, for the mirror and intake (TITAN_NATS_URL)"
    )
    nats_user: str | None = Field(
        None, description="NATS user name, with nats_password. Default: none (TITAN_NATS_USER)"
    )
    nats_password: SecretStr | None = Field(
        None, description="NATS password for nats_user; never printed. Default: none (TITAN_NATS_PASSWORD)"
    )
    nats_token: SecretStr | None = Field(
        None,
        description="NATS authentication token, instead of a user and password; never printed. "
        "Default: none (TITAN_NATS_TOKEN)",
    )
    nats_creds_file: str | None = Field(
        None,
        description="Path of a NATS .creds file (user JWT and nkey seed; needs the nkeys package). "
        "Default: none (TITAN_NATS_CREDS_FILE)",
    )
    nats_tls_ca: str | None = Field(
        None,
        description="PEM file of the CA that signed the NATS server's certificate; setting it (or a "
        "tls:// URL) turns TLS on. Default: none, the system's CAs for tls:// (TITAN_NATS_TLS_CA)",
    )
    nats_tls_cert: str | None = Field(
        None,
        description="PEM client certificate for NATS servers that verify clients, with nats_tls_key. "
        "Default: none (TITAN_NATS_TLS_CERT)",
    )
    nats_tls_key: str | None = Field(
        None, description="PEM private key of nats_tls_cert. Default: none (TITAN_NATS_TLS_KEY)"
    )
    nats_connect_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a service waits for NATS at start before giving up (exit 3); no endless "
        "reconnect at start (TITAN_NATS_CONNECT_TIMEOUT_S)",
    )
    nats_duplicate_window_s: float = Field(
        120.0,
        gt=0,
        le=86_400,
        description="JetStream's duplicate window on titan's streams, in seconds: a Nats-Msg-Id seen "
        "again within it is stored once (TITAN_NATS_DUPLICATE_WINDOW_S)",
    )
    checkpoint_key: str | None = Field(
        None,
        description="Path of the Ed25519 private key that signs ledger checkpoints; never stored in "
        "the database. Default: checkpoint.key beside an embedded ledger (.titan/checkpoint.key), "
        ".titan/checkpoint.key for a PostgreSQL one (TITAN_CHECKPOINT_KEY)",
    )
    checkpoint_file: str | None = Field(
        None,
        description="Path of the append-only checkpoint log (JSON lines). Default: <ledger file "
        "stem>.checkpoints.jsonl beside an embedded ledger (.titan/ledger.checkpoints.jsonl), "
        ".titan/<database>.checkpoints.jsonl for a PostgreSQL one (TITAN_CHECKPOINT_FILE)",
    )
    checkpoint_public_key: str | None = Field(
        None,
        description="The Ed25519 public key that verifies checkpoints: 64 hex characters, or the "
        "path of a file holding them or a PEM public key. Default: derived from the private key "
        "file (TITAN_CHECKPOINT_PUBLIC_KEY)",
    )
    intake_keys: str | None = Field(
        None,
        description="Path of the intake's key file (`titan keys generate`): one HMAC key per issuer; "
        "every command on NATS must then be signed. Default: none (TITAN_INTAKE_KEYS)",
    )
    intake_window_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A signed command is refused when its issuer's timestamp is further than this "
        "many seconds from the intake's clock, past or future (TITAN_INTAKE_WINDOW_S)",
    )
    intake_unsigned: bool = Field(
        False,
        description="Let `titan serve` run without keys, taking unsigned commands from anyone who can "
        "publish on titan.cmd.> (a single-user trial only). Default: false (TITAN_INTAKE_UNSIGNED)",
    )
    serve_host: str = Field(
        "127.0.0.1",
        description="The address `titan serve` answers /health, /ready and /metrics on (TITAN_SERVE_HOST)",
    )
    serve_port: int = Field(
        8470, ge=0, le=65_535, description="The port of /health, /ready and /metrics; 0 picks one (TITAN_SERVE_PORT)"
    )
    console_tokens: str | None = Field(
        None,
        description="Path of the console's token file (`titan console token`): one line per token, "
        "`<subject> <role>[,<role>] sha256:<hex>`; re-read when it changes. Default: none "
        "(TITAN_CONSOLE_TOKENS)",
    )
    console_token_lines: str | None = Field(
        None,
        description="Token lines like the file's, separated by `;`, for a deployment that passes "
        "them in the environment. With neither, the console makes one token for the run and prints "
        "a login URL (TITAN_CONSOLE_TOKEN_LINES)",
    )
    console_host: str = Field(
        "127.0.0.1", description="The address `titan console` listens on (TITAN_CONSOLE_HOST)"
    )
    console_port: int = Field(
        8480, ge=0, le=65_535, description="The port `titan console` listens on; 0 picks one (TITAN_CONSOLE_PORT)"
    )
    otel_exporter: Literal["none", "otlp"] = Field(
        "none",
        description="Where `titan serve` sends its OpenTelemetry trace spans: none (no SDK installed, "
        "tracing costs nothing) or otlp (OTLP over HTTP to otel_endpoint). Default: none "
        "(TITAN_OTEL_EXPORTER)",
    )
    otel_endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        description="The OTLP/HTTP traces endpoint of a collector (or Jaeger), used when otel_exporter "
        "is otlp (TITAN_OTEL_ENDPOINT)",
    )
    otel_service_name: str = Field(
        "titan",
        min_length=1,
        description="The service.name resource attribute of titan's spans (TITAN_OTEL_SERVICE_NAME)",
    )
