"""requirements.lock agrees with pyproject.toml.

The lock (written by `bash .ci/lock`) pins every dependency of the runtime and the `dev` extra,
transitive ones included, at one version with its hashes; torch is pinned by the README's commands
instead (its build differs by platform). These tests fail when someone edits one file and not the
other: a dependency added to pyproject but not locked, a range the locked version falls outside of,
a locked package whose own requirements are missing from the lock. That an environment holds exactly
the locked versions is pip's job (`--require-hashes -r requirements.lock`), not a test's: the suite
must also pass in an environment upgraded past the lock (`pip install -U`), where it checks what
the next refresh will bring.
"""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TORCH_VERSION = Version("2.13.0")
UNLOCKED = {"torch"}  # installed by the README's commands before the lock
# torch's CUDA build brings these, pinned exactly by torch itself; the CPU build has none of them.
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def locked() -> dict[str, list[tuple[Version, Marker | None]]]:
    """name -> [(version, marker)], from the lock's requirement lines (hash lines skipped)."""
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line or line[0] in "# ":
            continue
        requirement = Requirement(line.rstrip(" \\"))
        (spec,) = requirement.specifier
        assert spec.operator == "==", line
        pins.setdefault(canonicalize_name(requirement.name), []).append((Version(spec.version), requirement.marker))
    return pins


def pin_here(name: str) -> Version | None:
    """The locked version of `name` for this interpreter and platform (None: not for this platform)."""
    for version, marker in locked().get(canonicalize_name(name), []):
        if marker is None or marker.evaluate():
            return version
    return None


def direct_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["dev"])]


def test_every_lock_line_is_pinned_with_hashes():
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert blocks and all("--hash=sha256:" in block for block in blocks)


@pytest.mark.parametrize("requirement", direct_requirements(), ids=str)
def test_pyproject_ranges_hold_the_locked_versions(requirement):
    name = canonicalize_name(requirement.name)
    if name in UNLOCKED:
        assert requirement.specifier.contains(TORCH_VERSION), f"pyproject's {requirement} excludes torch {TORCH_VERSION}"
        return
    assert name in locked(), f"{requirement.name} is in pyproject.toml but not in requirements.lock: run `bash .ci/lock`"
    version = pin_here(name)
    assert version is not None and requirement.specifier.contains(version, prereleases=True), (
        f"requirements.lock pins {name}=={version}, outside pyproject's {requirement}: run `bash .ci/lock`")


def test_the_lock_is_closed_under_its_own_requirements():
    """Each locked package's requirements (for this platform) are locked too, or are torch's."""
    missing = set()
    for name in locked():
        if pin_here(name) is None:
            continue
        for raw in metadata.requires(name) or []:
            requirement = Requirement(raw)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency not in UNLOCKED and not CUDA_ONLY.match(dependency) and dependency not in locked():
                missing.add(f"{dependency} (needed by {name})")
    assert not missing, f"not in requirements.lock: {sorted(missing)}; run `bash .ci/lock`"


def test_the_readme_installs_the_locked_torch():
    readme = (ROOT / "README.md").read_text()
    assert f"torch=={TORCH_VERSION}" in readme
    assert f"TORCH_VERSION={TORCH_VERSION}" in (ROOT / ".ci" / "lock").read_text()
