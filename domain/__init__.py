"""Titan's pure execution core, compiled with mypyc at install time (see docs/building.md).

This file only guards the compiled build; it must stay free of project imports. It runs before
any domain.* module loads and refuses compiled modules older than their sources: the build
records each source's SHA-256 in _build_manifest.json. TITAN_CORE=interpreted loads the .py
sources instead (infra.core.load_core("compiled") is what refuses to run without a build).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec, SourceFileLoader
from importlib.util import spec_from_file_location
from types import ModuleType

CORE_ENV = "TITAN_CORE"
MANIFEST_NAME = "_build_manifest.json"
_KINDS = ("auto", "compiled", "interpreted")
_FIX = (
    "Rebuild it with `pip install -e .` (from the checkout, in titan's environment), "
    "or set TITAN_CORE=interpreted to run the interpreted core from the .py sources."
)


class StaleCoreError(ImportError):
    """The compiled core does not match its sources."""


class SourceOnlyFinder:
    """Loads `<package>.<name>` from `<directory>/<name>.py`, never from a compiled module."""

    def __init__(self, package: str, directory: str) -> None:
        self.package = package
        self.directory = directory

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        if parent != self.package:
            return None
        source = os.path.join(self.directory, name + ".py")
        if not os.path.isfile(source):
            return None
        return spec_from_file_location(fullname, source, loader=SourceFileLoader(fullname, source))


def _extension_module(filename: str) -> str | None:
    """Return the module name of a compiled file this interpreter can load, else None."""
    for suffix in sorted(EXTENSION_SUFFIXES, key=len, reverse=True):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


def _problems(directory: str, filenames: list[str], compiled: list[str]) -> list[str]:
    try:
        with open(os.path.join(directory, MANIFEST_NAME), "rb") as raw:
            manifest = json.load(raw)
        listed_sources: dict[str, str] = manifest["sources"]
        listed_extensions: list[str] = manifest["extensions"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{MANIFEST_NAME} is missing or unreadable, so no compiled module can be trusted"]
    problems = []
    for source, digest in sorted(listed_sources.items()):
        try:
            with open(os.path.join(directory, source), "rb") as raw:
                changed = hashlib.sha256(raw.read()).hexdigest() != digest
        except OSError:
            problems.append(f"{source} was compiled but its source is gone")
            continue
        if changed:
            problems.append(f"{source} changed since it was compiled")
    for filename in filenames:
        if (
            filename.endswith(".py")
            and filename != "__init__.py"
            and filename not in listed_sources
        ):
            problems.append(f"{filename} was added after the build (it is not compiled)")
    for filename in compiled:
        if filename not in listed_extensions:
            problems.append(f"{filename} does not belong to the current build")
    for filename in listed_extensions:
        if filename not in filenames:
            problems.append(f"{filename} belongs to the build but is missing")
    return problems


def _guard() -> None:
    kind = os.environ.get(CORE_ENV, "").strip().lower() or "auto"
    if kind not in _KINDS:
        raise ImportError(
            f"{CORE_ENV}={os.environ[CORE_ENV]!r} is not understood; use one of {', '.join(_KINDS)}"
        )
    directory = os.path.dirname(os.path.abspath(__file__))
    if kind == "interpreted":
        sys.meta_path.insert(0, SourceOnlyFinder(__name__, directory))
        return
    filenames = sorted(os.listdir(directory))
    compiled = [name for name in filenames if _extension_module(name) not in (None, "__init__")]
    if not compiled:
        return
    problems = _problems(directory, filenames, compiled)
    if problems:
        listing = "".join(f"\n  - {problem}" for problem in problems)
        raise StaleCoreError(
            f"titan's compiled core in {directory} is out of date with its sources:"
            f"{listing}\n{_FIX}"
        )


_guard()
