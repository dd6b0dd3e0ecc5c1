"""The core loader (infra/core.py) and the compiled-core guard (domain/__init__.py).

The guard is exercised in subprocesses on throwaway copies of the package in tmp_path, so the
checkout is never modified. Fake "compiled" files are enough for most guard checks: the guard
refuses a stale build before Python ever tries to load the extension.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from infra.core import (
    INTERPRETED_PACKAGE,
    MANIFEST_NAME,
    CoreUnavailableError,
    build_fallback_reason,
    compiled_core_active,
    core_directory,
    core_module_names,
    load_core,
)

CORE_DIR = core_directory()
EXT = EXTENSION_SUFFIXES[0]
FIX_HINTS = ("pip install -e .", "TITAN_CORE=interpreted")


def checkout_build() -> dict[str, object] | None:
    try:
        manifest: dict[str, object] = json.loads((CORE_DIR / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest


def compiled_build_present() -> bool:
    build = checkout_build()
    return bool(build and build.get("compiled")) and os.environ.get("TITAN_CORE") != "interpreted"


needs_modules = pytest.mark.skipif(not core_module_names(), reason="domain/ has no modules yet")
needs_build = pytest.mark.skipif(
    not compiled_build_present(), reason="no compiled build here (or TITAN_CORE=interpreted)"
)


# --- the loader ---------------------------------------------------------------------------


def test_interpreted_core_runs_the_py_sources_under_a_private_package() -> None:
    core = load_core("interpreted")

    assert core.kind == "interpreted"
    assert core.package == INTERPRETED_PACKAGE
    assert core.module_names == core_module_names()
    for name in core.module_names:
        module = core.module(name)
        assert module.__name__ == f"{INTERPRETED_PACKAGE}.{name}"
        assert str(module.__file__).endswith(".py")
        assert Path(str(module.__file__)).parent == CORE_DIR


def test_interpreted_core_is_loaded_once_per_process() -> None:
    assert load_core("interpreted") is load_core("interpreted")


@needs_modules
def test_interpreted_core_is_independent_of_the_domain_package() -> None:
    interpreted = load_core("interpreted")
    active = load_core("auto")

    for name in core_module_names():
        assert interpreted.module(name) is not active.module(name)
        assert interpreted.module(name) is not importlib.import_module(f"domain.{name}")


@needs_modules
def test_modules_are_reachable_by_name_and_by_attribute() -> None:
    core = load_core("interpreted")
    public = [name for name in core.module_names if not name.startswith("_")]

    for name in public:
        assert getattr(core, name) is core.module(name)
    with pytest.raises(LookupError, match="no module 'no_such_module'"):
        core.module("no_such_module")
    with pytest.raises(AttributeError):
        core.no_such_module  # noqa: B018


def test_auto_is_the_domain_package_the_process_runs() -> None:
    core = load_core("auto")

    assert core.package == "domain"
    assert core.kind == ("compiled" if compiled_core_active() else "interpreted")


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown core kind"):
        load_core("fast")  # type: ignore[arg-type]


def test_compiled_core_is_refused_while_titan_core_says_interpreted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TITAN_CORE", "interpreted")

    with pytest.raises(CoreUnavailableError, match="TITAN_CORE=interpreted"):
        load_core("compiled")


@pytest.mark.skipif(compiled_build_present(), reason="the core is compiled here")
def test_compiled_core_is_refused_when_the_install_did_not_compile_it() -> None:
    if compiled_core_active():
        pytest.skip("the core is compiled here")
    with pytest.raises(CoreUnavailableError, match="compiled core"):
        load_core("compiled")


@needs_modules
@needs_build
def test_compiled_core_runs_the_extension_modules() -> None:
    compiled = load_core("compiled")
    interpreted = load_core("interpreted")

    assert compiled.kind == "compiled"
    assert compiled_core_active()
    assert build_fallback_reason() is None
    assert load_core("auto").kind == "compiled"
    for name in compiled.module_names:
        assert str(compiled.module(name).__file__).endswith(EXT)
        assert str(interpreted.module(name).__file__).endswith(".py")
        assert compiled.module(name) is not interpreted.module(name)


# --- the guard, on throwaway copies of the package -----------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_build(root: Path, sources: dict[str, str], *, manifest: bool = True) -> Path:
    """Write a domain package whose every module looks compiled, and its manifest."""
    package = root / "domain"
    package.mkdir()
    shutil.copy(CORE_DIR / "__init__.py", package / "__init__.py")
    for name, text in sources.items():
        (package / f"{name}.py").write_text(text)
        (package / f"{name}{EXT}").write_bytes(b"not a real extension module")
    if manifest:
        listing = {
            "format": 1,
            "compiled": True,
            "reason": None,
            "extensions": sorted(f"{name}{EXT}" for name in sources),
            "sources": {f"{name}.py": sha256(package / f"{name}.py") for name in sources},
        }
        (package / MANIFEST_NAME).write_text(json.dumps(listing))
    return package


SOURCES = {"alpha": "from .beta import VALUE\n\nDOUBLE = 2 * VALUE\n", "beta": "VALUE = 21\n"}


def run_python(
    root: Path, code: str, titan_core: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "TITAN_CORE"}
    env["PYTHONPATH"] = str(root)
    if titan_core is not None:
        env["TITAN_CORE"] = titan_core
    check_location = (
        f"import domain; assert domain.__file__.startswith({str(root)!r}), domain.__file__\n"
    )
    return subprocess.run(  # noqa: PLW1510 - callers check the exit code
        [sys.executable, "-c", check_location + code],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "StaleCoreError" in result.stderr, result.stderr
    for fragment in (*fragments, *FIX_HINTS):
        assert fragment in result.stderr, result.stderr


def test_guard_accepts_a_build_that_matches_its_sources(tmp_path: Path) -> None:
    package = fake_build(tmp_path, SOURCES)
    os.utime(package / "alpha.py")  # a newer mtime alone is not a change

    result = run_python(tmp_path, "print('ok')")

    assert result.returncode == 0, result.stderr


def test_guard_refuses_a_source_changed_since_the_build(tmp_path: Path) -> None:
    package = fake_build(tmp_path, SOURCES)
    (package / "beta.py").write_text("VALUE = 22\n")

    assert_refused(run_python(tmp_path, "import domain.alpha"), "beta.py changed")


def test_guard_refuses_compiled_modules_without_a_manifest(tmp_path: Path) -> None:
    fake_build(tmp_path, SOURCES, manifest=False)

    assert_refused(run_python(tmp_path, "import domain.alpha"), MANIFEST_NAME)


def test_guard_refuses_a_module_added_after_the_build(tmp_path: Path) -> None:
    package = fake_build(tmp_path, SOURCES)
    (package / "gamma.py").write_text("X = 1\n")

    assert_refused(run_python(tmp_path, "import domain.alpha"), "gamma.py")


def test_guard_refuses_a_compiled_module_whose_source_is_gone(tmp_path: Path) -> None:
    package = fake_build(tmp_path, SOURCES)
    (package / "beta.py").unlink()

    assert_refused(run_python(tmp_path, "import domain.alpha"), "beta.py")


def test_guard_refuses_a_compiled_file_from_another_build(tmp_path: Path) -> None:
    package = fake_build(tmp_path, SOURCES)
    (package / f"old{EXT}").write_bytes(b"left over")

    assert_refused(run_python(tmp_path, "import domain.alpha"), f"old{EXT}")


def test_titan_core_interpreted_loads_the_sources_despite_a_stale_build(tmp_path: Path) -> None:
    package = fake_build(tmp_path, SOURCES)
    (package / "beta.py").write_text("VALUE = 50\n")

    result = run_python(
        tmp_path,
        "import domain.alpha as a, domain.beta as b\nprint(a.__file__, b.__file__, a.DOUBLE)",
        titan_core="interpreted",
    )

    assert result.returncode == 0, result.stderr
    alpha_file, beta_file, double = result.stdout.split()
    assert alpha_file == str(package / "alpha.py")
    assert beta_file == str(package / "beta.py")
    assert double == "100"


def test_guard_ignores_a_package_without_compiled_modules(tmp_path: Path) -> None:
    package = tmp_path / "domain"
    package.mkdir()
    shutil.copy(CORE_DIR / "__init__.py", package / "__init__.py")
    (package / "alpha.py").write_text("X = 1\n")

    result = run_python(tmp_path, "import domain.alpha as a\nprint(a.__file__)")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(package / "alpha.py")


def test_an_unknown_titan_core_value_is_refused(tmp_path: Path) -> None:
    fake_build(tmp_path, SOURCES)

    result = run_python(tmp_path, "import domain.alpha", titan_core="turbo")

    assert result.returncode != 0
    assert "TITAN_CORE='turbo'" in result.stderr


@needs_modules
@needs_build
def test_guard_refuses_the_real_build_once_a_source_changes(tmp_path: Path) -> None:
    package = tmp_path / "domain"
    shutil.copytree(CORE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    name = core_module_names()[0]

    fresh = run_python(tmp_path, f"import domain.{name} as m\nprint(m.__file__)")
    with (package / f"{name}.py").open("a") as source:
        source.write("\n# changed after the build\n")
    stale = run_python(tmp_path, f"import domain.{name}")
    interpreted = run_python(
        tmp_path, f"import domain.{name} as m\nprint(m.__file__)", titan_core="interpreted"
    )

    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == str(package / f"{name}{EXT}")
    assert_refused(stale, f"{name}.py changed")
    assert interpreted.returncode == 0, interpreted.stderr
    assert interpreted.stdout.strip() == str(package / f"{name}.py")


def test_the_titan_command_refuses_a_stale_core_in_one_line_with_exit_3(tmp_path: Path) -> None:
    """The core is imported before any command could catch its refusal: the console script's
    entry point (infra.entry) turns it into one line naming the fix, exit 3 (a dependency)."""
    package = fake_build(tmp_path, SOURCES)
    (package / "beta.py").write_text("VALUE = 22\n")
    project = Path(__file__).resolve().parents[2]
    env = {key: value for key, value in os.environ.items() if key != "TITAN_CORE"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(project)])
    result = subprocess.run(  # noqa: PLW1510 - the exit code is the point
        [sys.executable, "-c", "from infra.entry import main; main()", "version"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "beta.py changed" in result.stderr and "pip install -e ." in result.stderr
