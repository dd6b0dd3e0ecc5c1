"""Load titan's execution core: the mypyc-compiled `domain` package, or its interpreted sources.

`load_core("compiled")` is the `domain` package as installed, and refuses to run unless every
module in it is compiled. `load_core("interpreted")` is a second, independent copy of the same
sources, loaded from the .py files under the private package name `_titan_interpreted_domain`,
so both can run side by side in one process and their output be compared byte for byte.
Its objects are NOT instances of `domain.*` classes: compare them through canonical bytes.
`load_core("auto")` is the `domain` package the rest of the process imports, compiled or not.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import (
    EXTENSION_SUFFIXES,
    ExtensionFileLoader,
    ModuleSpec,
    SourceFileLoader,
)
from pathlib import Path
from types import ModuleType
from typing import Final, Literal

from replay.cores import CORE_CHOICES as REPLAY_CORE_CHOICES
from replay.cores import CoreChoice as ReplayCores
from replay.cores import CoreSlot

CoreKind = Literal["compiled", "interpreted"]
CoreChoice = Literal["compiled", "interpreted", "auto"]

CORE_PACKAGE: Final = "domain"
INTERPRETED_PACKAGE: Final = "_titan_interpreted_domain"
CORE_ENV: Final = "TITAN_CORE"
MANIFEST_NAME: Final = "_build_manifest.json"

_lock = threading.Lock()
_interpreted: Core | None = None


class CoreUnavailableError(ImportError):
    """The requested core cannot be loaded in this installation."""


class Core:
    """One loaded copy of the execution core: its modules by name, and how they run."""

    def __init__(
        self, kind: CoreKind, package: str, directory: Path, modules: dict[str, ModuleType]
    ) -> None:
        self.kind: Final[CoreKind] = kind
        self.package: Final = package
        self.directory: Final = directory
        self._modules: Final = dict(modules)

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._modules))

    def module(self, name: str) -> ModuleType:
        """Return the core's module `name`, e.g. "decider"."""
        try:
            return self._modules[name]
        except KeyError:
            known = ", ".join(self.module_names) or "none"
            raise LookupError(f"titan's core has no module {name!r} (it has: {known})") from None

    def __getattr__(self, name: str) -> ModuleType:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.module(name)
        except LookupError as error:
            raise AttributeError(str(error)) from None

    def __repr__(self) -> str:
        return f"Core(kind={self.kind!r}, package={self.package!r}, modules={self.module_names})"


def load_core(kind: CoreChoice = "auto") -> Core:
    """Load the compiled core, an interpreted copy, or whichever `domain` runs ("auto")."""
    if kind == "compiled":
        return _load_compiled()
    if kind == "interpreted":
        return _load_interpreted()
    if kind == "auto":
        modules = _import_all(CORE_PACKAGE, core_module_names())
        active: CoreKind = "compiled" if _all_compiled(modules) else "interpreted"
        return Core(active, CORE_PACKAGE, core_directory(), modules)
    raise ValueError(f"unknown core kind {kind!r}: use 'compiled', 'interpreted' or 'auto'")


def compiled_core_active() -> bool:
    """Return whether the `domain` package's modules are loaded from compiled extensions.

    Imports them; raises domain.StaleCoreError (an ImportError) when the build is stale.
    """
    return _all_compiled(_import_all(CORE_PACKAGE, core_module_names()))


def build_fallback_reason() -> str | None:
    """Return why the last install left the core interpreted, or None if it compiled it."""
    try:
        with open(core_directory() / MANIFEST_NAME, "rb") as raw:
            manifest = json.load(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("compiled", True):
        return None
    return str(manifest.get("reason") or "unknown")


def core_directory() -> Path:
    """Return the directory of the `domain` package's sources, without importing it."""
    loaded = sys.modules.get(CORE_PACKAGE)
    locations: Sequence[str] | None
    if loaded is not None:
        locations = list(loaded.__path__)
    else:
        spec = importlib.util.find_spec(CORE_PACKAGE)
        locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise CoreUnavailableError(
            f"the {CORE_PACKAGE!r} package is not importable: install titan (pip install -e .)"
        )
    return Path(next(iter(locations)))


def core_module_names() -> tuple[str, ...]:
    """Return the names of the core's modules: every domain/*.py but __init__.py."""
    return tuple(
        sorted(path.stem for path in core_directory().glob("*.py") if path.stem != "__init__")
    )


def _load_compiled() -> Core:
    if os.environ.get(CORE_ENV, "").strip().lower() == "interpreted":
        raise CoreUnavailableError(
            f"{CORE_ENV}=interpreted is set, so the {CORE_PACKAGE!r} package runs from its .py "
            f"sources; unset {CORE_ENV} to use the compiled core"
        )
    names = core_module_names()
    modules = _import_all(CORE_PACKAGE, names)
    if not modules or not _all_compiled(modules):
        interpreted = [name for name, module in modules.items() if not _is_compiled(module)]
        detail = (
            f"{', '.join(interpreted)} loaded from .py sources" if interpreted else "no modules"
        )
        reason = build_fallback_reason()
        fix = (
            f"the install fell back to the interpreted core: {reason}"
            if reason
            else "install titan where a C compiler is available: pip install -e ."
        )
        raise CoreUnavailableError(f"the compiled core is not available ({detail}); {fix}")
    return Core("compiled", CORE_PACKAGE, core_directory(), modules)


def _load_interpreted() -> Core:
    global _interpreted
    with _lock:
        if _interpreted is None:
            directory = core_directory()
            _install_private_package(directory)
            modules = _import_all(INTERPRETED_PACKAGE, core_module_names())
            _interpreted = Core("interpreted", INTERPRETED_PACKAGE, directory, modules)
        return _interpreted


def _install_private_package(directory: Path) -> None:
    """Make `_titan_interpreted_domain.<name>` load `<directory>/<name>.py`.

    The package itself is empty (domain/__init__.py, the build guard, does not run for it).
    """
    if INTERPRETED_PACKAGE in sys.modules:
        return
    spec = ModuleSpec(INTERPRETED_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(directory)]
    package = importlib.util.module_from_spec(spec)
    sys.meta_path.insert(0, _SourceOnlyFinder(INTERPRETED_PACKAGE, str(directory)))
    sys.modules[INTERPRETED_PACKAGE] = package


class _SourceOnlyFinder:
    """Finds `<package>.<name>` as `<directory>/<name>.py`, never as a compiled module."""

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
        loader = SourceFileLoader(fullname, source)
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


def _import_all(package: str, names: Sequence[str]) -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"{package}.{name}") for name in names}


def _all_compiled(modules: dict[str, ModuleType]) -> bool:
    return bool(modules) and all(_is_compiled(module) for module in modules.values())


def _is_compiled(module: ModuleType) -> bool:
    spec = module.__spec__
    if spec is not None and isinstance(spec.loader, ExtensionFileLoader):
        return True
    return str(getattr(module, "__file__", "") or "").endswith(tuple(EXTENSION_SUFFIXES))


def load_cores(choice: ReplayCores = "both") -> list[CoreSlot]:
    """The cores for a replay. "both" tolerates a missing compiled core (the slot says why);
    asking for "compiled" alone raises CoreUnavailableError when it cannot be loaded."""
    if choice not in REPLAY_CORE_CHOICES:
        raise ValueError(f"unknown core choice {choice!r}: use one of {', '.join(REPLAY_CORE_CHOICES)}")
    slots: list[CoreSlot] = []
    if choice in ("both", "compiled"):
        try:
            slots.append(CoreSlot("compiled", load_core("compiled")))
        except ImportError as error:  # not built, TITAN_CORE=interpreted, or a stale build
            if choice == "compiled":
                raise CoreUnavailableError(str(error)) from error
            slots.append(CoreSlot("compiled", None, str(error)))
    if choice in ("both", "interpreted"):
        slots.append(CoreSlot("interpreted", load_core("interpreted")))
    return slots


