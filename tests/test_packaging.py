"""pvae as a package: the wheel builds offline, holds every module, and runs from where it is installed."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pvae

# A module-scoped fixture here is costly to build: the file's tests share one worker (pytest-xdist).
pytestmark = pytest.mark.xdist_group("test_packaging")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel hatchling (pyproject's build backend, installed with the dev tools) builds from the tree."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"the wheel did not build:\n{done.stdout}\n{done.stderr}"
    (path,) = out.glob("pvae-*.whl")
    return path


def test_wheel_holds_every_module_and_the_script(wheel: Path) -> None:
    """Every module under pvae/ is in the wheel, with the `pvae` console script and the dependencies."""
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pvae").rglob("*.py")}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    with zipfile.ZipFile(wheel) as z:
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "pvae = pvae.cli:main" in z.read(info).decode()
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    required = {r.split(">")[0].split("=")[0].strip() for r in meta.get_all("Requires-Dist") or [] if "extra" not in r}
    assert {"pyro-ppl", "torch", "torchvision", "matplotlib", "tqdm"} <= required, required
    assert meta["Version"] == pvae.__version__, f"wheel {meta['Version']} vs pvae.__version__ {pvae.__version__}"


def test_installed_wheel_runs_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    """The wheel, installed (unpacked: it is pure Python) into an empty folder, runs `python -m pvae`
    from there, not from this checkout."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import pvae; print(pvae.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), f"imported {where}, not the installed wheel"
    done = subprocess.run([sys.executable, "-m", "pvae", "--version"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.startswith(f"pvae {pvae.__version__}"), done.stdout + done.stderr
