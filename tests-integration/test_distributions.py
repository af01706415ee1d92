"""Every distribution builds a wheel that holds only its own subpackage of the uno namespace."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def import_name(package: Path) -> str:
    (module,) = (package / "src" / "uno").iterdir()
    return module.name


def test_all_eight_distributions_are_present() -> None:
    names = {tomllib.loads((p / "pyproject.toml").read_text())["project"]["name"] for p in PACKAGES}
    assert names == {
        "uno-core-events",
        "uno-event-storage",
        "uno-event-sourcing",
        "uno-event-processing",
        "uno-di",
        "uno-cqrs",
        "uno-web-adapters",
        "uno-devtools",
    }


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_wheel_ships_only_its_subpackage_and_no_namespace_init(
    package: Path, tmp_path: Path
) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=package,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    code = [n for n in names if ".dist-info/" not in n]
    prefix = f"uno/{import_name(package)}/"
    assert code, f"{wheel.name} is empty"
    assert all(n.startswith(prefix) for n in code), f"{wheel.name} ships {code}"
    assert f"{prefix}py.typed" in code
    assert "uno/__init__.py" not in names
    assert f"{prefix}__init__.py" in code
