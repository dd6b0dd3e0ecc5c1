"""Drive the `titan` command as a user would: a real process, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def titan_command() -> list[str]:
    """The installed console script when there is one, else the module."""
    script = Path(sys.executable).parent / "titan"
    return [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]


class Titan:
    """Runs `titan …` in a scratch directory."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
        full_env["PYTHONPATH"] = str(ROOT)
        full_env["COLUMNS"] = "200"
        full_env.update(env or {})
        return subprocess.run(
            [*titan_command(), *args], cwd=self.cwd, input=stdin, capture_output=True, text=True, env=full_env, timeout=300, check=False
        )

    def json(self, *args: str, **kwargs: Any) -> Any:
        result = self(*args, **kwargs)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def titan(tmp_path: Path) -> Titan:
    return Titan(tmp_path)
