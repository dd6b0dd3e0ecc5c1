"""Building the compiled core as an install does (setup.py's build_ext), on a throwaway copy.

The copy holds setup.py, pyproject.toml, the real domain/__init__.py (the guard) and two tiny
modules, so these tests prove the build machinery itself, whatever state domain/ is in.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.metadata import distributions
from pathlib import Path

import pytest

from infra.core import (
    MANIFEST_NAME,
    build_fallback_reason,
    compiled_core_active,
    core_directory,
    core_module_names,
)

pytestmark = pytest.mark.e2e

ROOT = core_directory().parent
EXT = EXTENSION_SUFFIXES[0]
MODULES = {
    "alpha": "from typing import Final\n\nfrom .beta import scale\n\nBASE: Final = 7\n\n\n"
    "def total(n: int) -> int:\n    return scale(n) + BASE\n",
    "beta": "def scale(n: int) -> int:\n    return 3 * n\n",
}


def c_compiler() -> str | None:
    command = shlex.split(os.environ.get("CC") or str(sysconfig.get_config_var("CC") or ""))
    return shutil.which(command[0]) if command else None


def build_tools_missing() -> str | None:
    for module in ("setuptools", "mypyc"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed in this environment"
    return None


needs_build_tools = pytest.mark.skipif(
    build_tools_missing() is not None, reason=str(build_tools_missing())
)


def project_copy(root: Path) -> Path:
    for name in ("setup.py", "pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, root / name)
    package = root / "domain"
    package.mkdir()
    shutil.copy(ROOT / "domain" / "__init__.py", package / "__init__.py")
    for name, text in MODULES.items():
        (package / f"{name}.py").write_text(text)
    return package


def build_in_place(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - callers check the exit code
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_python(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "TITAN_CORE"}
    env["PYTHONPATH"] = str(root)
    return subprocess.run(  # noqa: PLW1510 - callers check the exit code
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )


@needs_build_tools
def test_without_a_working_compiler_the_build_falls_back_to_the_interpreted_core(
    tmp_path: Path,
) -> None:
    package = project_copy(tmp_path)

    build = build_in_place(tmp_path, CC="/bin/false")
    imported = run_python(tmp_path, "import domain.alpha as a\nprint(a.__file__, a.total(5))")

    assert build.returncode == 0, build.stderr
    assert "was NOT compiled with mypyc" in build.stderr
    assert "the C compiler failed" in build.stderr
    assert not list(package.glob(f"*{EXT}"))
    manifest = json.loads((package / MANIFEST_NAME).read_text())
    assert manifest["compiled"] is False
    assert "C compiler" in manifest["reason"]
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == [str(package / "alpha.py"), "22"]


@needs_build_tools
def test_sources_mypyc_rejects_fall_back_with_the_type_errors(tmp_path: Path) -> None:
    package = project_copy(tmp_path)
    (package / "beta.py").write_text('def scale(n: int) -> int:\n    return "3" * n\n')

    build = build_in_place(tmp_path)

    assert build.returncode == 0, build.stderr
    assert "mypyc rejected the core's sources" in build.stderr
    assert "beta.py:2: error" in build.stderr
    assert not list(package.glob(f"*{EXT}"))


@needs_build_tools
@pytest.mark.skipif(c_compiler() is None, reason="no C compiler on this machine")
def test_the_build_compiles_every_module_and_the_guard_checks_them(tmp_path: Path) -> None:
    package = project_copy(tmp_path)

    build = build_in_place(tmp_path)
    compiled = run_python(tmp_path, "import domain.alpha as a\nprint(a.__file__, a.total(5))")
    with (package / "beta.py").open("a") as source:
        source.write("\n# edited after the build\n")
    stale = run_python(tmp_path, "import domain.alpha")

    assert build.returncode == 0, build.stderr
    assert "NOT compiled" not in build.stderr
    manifest = json.loads((package / MANIFEST_NAME).read_text())
    assert manifest["compiled"] is True
    assert set(manifest["sources"]) == {"alpha.py", "beta.py"}
    assert sorted(path.name for path in package.glob(f"*{EXT}")) == manifest["extensions"]
    assert compiled.returncode == 0, compiled.stderr
    assert compiled.stdout.split() == [str(package / f"alpha{EXT}"), "22"]
    assert stale.returncode != 0
    assert "beta.py changed since it was compiled" in stale.stderr


def installed_editable_from_this_checkout() -> bool:
    # The checkout's own titan.egg-info (left by setuptools) is a distribution too: look for
    # the installed one, which records where it was installed from.
    for installed in distributions(name="titan"):
        direct_url = installed.read_text("direct_url.json")
        if direct_url:
            info = json.loads(direct_url)
            checkout = Path(info.get("url", "").removeprefix("file://"))
            if info.get("dir_info", {}).get("editable") and checkout.resolve() == ROOT.resolve():
                return True
    return False


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI only: a developer may run interpreted")
@pytest.mark.skipif(c_compiler() is None, reason="no C compiler on this machine")
def test_ci_runs_the_compiled_core() -> None:
    if os.environ.get("TITAN_CORE") == "interpreted":
        pytest.skip("TITAN_CORE=interpreted")
    if not installed_editable_from_this_checkout():
        pytest.skip("titan is not installed editable from this checkout")
    if not core_module_names():
        pytest.skip("domain/ has no modules yet")

    assert compiled_core_active(), (
        "the install fell back to the interpreted core even though a C compiler is present: "
        f"{build_fallback_reason()}"
    )
