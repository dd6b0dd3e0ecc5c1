"""A real Chromium for the browser tests: Debian's `chromium`, driven by Playwright's own client.

No browser is downloaded (`playwright install` downloads one and fails here): where
/usr/bin/chromium is missing, the session installs Debian's package once, as root, and says which
command failed if it cannot. A missing browser fails the tests; it never skips them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

CHROMIUM: Final = Path("/usr/bin/chromium")
INSTALL: Final = ("apt-get", "install", "-y", "chromium", "chromium-driver")
UPDATE: Final = ("apt-get", "update")

LAUNCH_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Chromium's flags for a container: no sandbox (no user namespaces), no GPU, and nothing that talks
to the network on its own. The profile is new for every launch: Playwright's `launch()` makes
its own empty `--user-data-dir` in a temp directory and removes it on close (it refuses the flag
from the caller)."""


class BrowserUnavailable(RuntimeError):
    """Chromium is neither installed nor installable here: says what was tried."""


_attempt: list[str] = []  # the install's outcome, once per session: "" when it worked


def chromium_path() -> str:
    """The Chromium binary to launch: /usr/bin/chromium, installed from Debian on first use."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if not _attempt:
        _attempt.append(_install())
    if _attempt[0] or not CHROMIUM.exists():
        raise BrowserUnavailable(_attempt[0] or f"`{' '.join(INSTALL)}` ran but {CHROMIUM} is still missing")
    return str(CHROMIUM)


def _install() -> str:
    """Install Debian's chromium; return "" on success, else what failed and how."""
    command = " ".join(INSTALL)
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and this machine has no apt-get: install Chromium, e.g. `{command}` on Debian"
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing: run `sudo {command}` (installing packages needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = _run(INSTALL, env)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        _run(UPDATE, env)
        result = _run(INSTALL, env)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        return f"`DEBIAN_FRONTEND=noninteractive {command}` failed (exit {result.returncode}): " + " | ".join(tail)
    return ""


def _run(command: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(command, 1, "", str(error))
