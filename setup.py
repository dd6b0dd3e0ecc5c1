"""Compile titan's execution core (domain/*.py) with mypyc when titan is installed.

The project's metadata lives in pyproject.toml; this file only adds the compiled core.

- Every domain/*.py except __init__.py is compiled in ONE mypyc build: a shared library
  (domain/_titan_core__mypyc.<ext>) plus one small extension per module (domain/<name>.<ext>).
- domain/_build_manifest.json records the SHA-256 of every compiled source. domain/__init__.py
  checks it on import, so a compiled module older than its source never runs silently.
- Where there is no working C compiler, or mypyc refuses the sources, the install still succeeds
  with the interpreted core (the .py files), prints a warning saying so and records the reason
  in the manifest (`titan version` shows which core is active).

`pip install -e .` places the compiled files next to their sources in the checkout (setuptools'
build_ext runs in place for editable installs); `pip install .` puts them in the wheel.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from setuptools import Distribution, Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

PROJECT_DIR = Path(__file__).resolve().parent
CORE_PACKAGE = "domain"
# mypyc names the shared library "<group>__mypyc"; a dotted group keeps it inside domain/.
CORE_GROUP = "domain._titan_core"
MANIFEST_NAME = "_build_manifest.json"
MANIFEST_FORMAT = 1
MYPYC_OUTPUT_DIR = os.path.join("build", "mypyc")
WARNING_DETAIL_LINES = 15
MAX_ERROR_CHARS = 160


def core_sources() -> list[str]:
    """Return the core's module paths (relative to the working directory), sorted."""
    package_dir = PROJECT_DIR / CORE_PACKAGE
    files = sorted(path for path in package_dir.glob("*.py") if path.name != "__init__.py")
    return [os.path.relpath(path) for path in files]


def sha256_of(path: str) -> str:
    with open(path, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def core_extensions() -> list[Extension]:
    """Return the extensions mypyc will produce for the core, named but not yet generated.

    setuptools fixes each extension's file name and in-place target before build_ext runs,
    while mypyc should only type-check and generate C when build_ext runs (not each time pip
    asks for metadata), so BuildCore fills these in with mypyc's real ones by name.
    """
    modules = [f"{CORE_PACKAGE}.{Path(path).stem}" for path in core_sources()]
    # Modules inside a package always get mypyc's shared library, which holds their code.
    shared_library = [f"{CORE_GROUP}__mypyc"] if modules else []
    return [Extension(name, sources=[]) for name in [*modules, *shared_library]]


class CoreDistribution(Distribution):
    """Distribution that always runs build_ext, so that a rebuild clears old compiled files."""

    def has_ext_modules(self) -> bool:
        return True


class BuildCore(build_ext):
    """Compile domain/ with mypyc, or fall back to the interpreted core with a warning."""

    def run(self) -> None:
        # build_ext.run() clears self.inplace while it builds and does not restore it when
        # the build fails, so remember now where the compiled core goes.
        self._core_dirs = self._output_dirs()
        self._remove_compiled_core()
        sources = core_sources()
        if not sources:
            return
        details = io.StringIO()
        try:
            with contextlib.redirect_stdout(details):
                generated = self._mypycify(sources)
            self._fill_in(generated)
            super().run()
        except (Exception, SystemExit) as error:  # noqa: BLE001 - any failure means "fall back"
            self.extensions = list[Extension]()
            self._remove_compiled_core()
            reason, advice = describe_failure(error, details.getvalue())
            self._write_manifest(sources, compiled=False, reason=reason)
            warn_interpreted_core(reason, advice)
            return
        print(details.getvalue(), end="")
        self._write_manifest(sources, compiled=True, reason=None)

    def _mypycify(self, sources: list[str]) -> list[Extension]:
        from mypyc.build import mypycify

        # "--config-file=" keeps the project's [tool.mypy] (plugins, overrides) out of the
        # build: the core imports only the standard library, and strictness is the test
        # suite's job, not the compiler's.
        extensions: list[Extension] = mypycify(
            ["--config-file=", *sources],
            opt_level="3",
            group_name=CORE_GROUP,
            target_dir=MYPYC_OUTPUT_DIR,
        )
        return extensions

    def _fill_in(self, generated: list[Extension]) -> None:
        expected = {extension.name: extension for extension in self.extensions}
        if sorted(expected) != sorted(extension.name for extension in generated):
            raise RuntimeError(
                f"mypyc produced extensions {sorted(e.name for e in generated)}, "
                f"setup.py expected {sorted(expected)}"
            )
        for extension in generated:
            vars(expected[extension.name]).update(vars(extension))

    def _output_dirs(self) -> list[str]:
        dirs = [os.path.join(self.build_lib, CORE_PACKAGE)]
        if self.inplace:  # next to the sources: the project has no package_dir mapping
            dirs.append(str(PROJECT_DIR / CORE_PACKAGE))
        return dirs

    def _remove_compiled_core(self) -> None:
        """Delete compiled modules and the manifest left by an earlier build."""
        for directory in self._core_dirs:
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if name == MANIFEST_NAME or name.endswith(tuple(EXTENSION_SUFFIXES)):
                    os.remove(os.path.join(directory, name))

    def _write_manifest(self, sources: list[str], *, compiled: bool, reason: str | None) -> None:
        extensions: list[str] = []
        if compiled:
            extensions = sorted(
                os.path.basename(self.get_ext_filename(self.get_ext_fullname(ext.name)))
                for ext in self.extensions
            )
        manifest = {
            "format": MANIFEST_FORMAT,
            "compiled": compiled,
            "reason": reason,
            "extensions": extensions,
            "sources": {os.path.basename(path): sha256_of(path) for path in sources},
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        for directory in self._core_dirs:
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, MANIFEST_NAME), "w", encoding="utf-8") as out:
                out.write(text)


def describe_failure(error: BaseException, output: str) -> tuple[str, str]:
    """Return why the core was not compiled, and what would fix it."""
    rebuild = "and reinstall: pip install -e .   (or pip install .)"
    if isinstance(error, SystemExit):
        summary = "mypyc rejected the core's sources"
        advice = f"To compile it, fix the errors listed above (mypy reports them too)\n{rebuild}"
    else:
        if isinstance(error, ImportError):
            summary = f"mypyc is not installed ({error})"
        elif isinstance(error, (CCompilerError, ExecError, PlatformError)):
            summary = f"the C compiler failed ({shorten(str(error))})"
        else:
            summary = f"{type(error).__name__}: {shorten(str(error))}"
        advice = f"To compile it, make a C compiler and the Python headers available\n{rebuild}"
    lines = [line for line in output.splitlines() if line.strip()]
    if len(lines) > WARNING_DETAIL_LINES:
        hidden = len(lines) - WARNING_DETAIL_LINES
        lines = [*lines[:WARNING_DETAIL_LINES], f"... ({hidden} more lines)"]
    return "\n".join([summary, *lines]), advice


def shorten(message: str) -> str:
    # A failed compiler command is reported as its whole argument list: keep the program.
    command = re.match(r"Command '\['([^']+)'.*(non-zero exit status \d+)", message)
    if command:
        return f"{command.group(1)} returned {command.group(2)}"
    return message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS] + " ..."


def warn_interpreted_core(reason: str, advice: str) -> None:
    rule = "=" * 78
    text = "\n".join(
        [
            rule,
            "WARNING: titan's execution core (domain/) was NOT compiled with mypyc.",
            "titan is installed with the INTERPRETED core: same results, several times slower.",
            "Reason: " + reason.replace("\n", "\n    "),
            advice,
            rule,
        ]
    )
    print(text, file=sys.stderr, flush=True)
    # pip hides a successful build's output unless run with -v: tell the person at the
    # terminal directly when there is one.
    if not sys.stderr.isatty():
        with contextlib.suppress(OSError), open("/dev/tty", "w", encoding="utf-8") as tty:
            tty.write("\n" + text + "\n")


setup(
    distclass=CoreDistribution,
    ext_modules=core_extensions(),
    cmdclass={"build_ext": BuildCore},
)
