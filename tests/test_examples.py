"""Every script in examples/ runs in its smoke mode, and none of the issue's examples is missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# The examples the project promises (issue 5's coursework list and the custom-component example);
# a new script must be added here too.
EXPECTED = {
    "custom_prior_and_likelihood.py",
    "train_mnist.py",
    "swap_prior.py",
    "grey_levels.py",
    "log_px_vs_elbo.py",
    "latent_1d_2d.py",
    "gradient_variance.py",
    "own_model.py",
}
SMOKE_SECONDS = 300  # generous: on a busy 2-core machine a smoke run takes 20-40 s, mostly imports


def scripts() -> list[Path]:
    return sorted(EXAMPLES.glob("*.py"))


def test_the_examples_folder_holds_exactly_the_listed_examples() -> None:
    """examples/ holds every promised example and no script this file does not know of."""
    found = {p.name for p in scripts()}
    assert found == EXPECTED, f"missing: {sorted(EXPECTED - found)}; not listed in EXPECTED: {sorted(found - EXPECTED)}"


@pytest.fixture
def data_root(fake_mnist_root: Path) -> Path:
    """Real MNIST when $PVAE_DATA_DIR holds it, else the small fake MNIST (600 train, 200 test images)."""
    env = os.environ.get("PVAE_DATA_DIR")
    if env and (Path(env).expanduser() / "MNIST" / "raw").is_dir():
        return Path(env).expanduser()
    return fake_mnist_root


@pytest.mark.parametrize("script", scripts(), ids=lambda p: p.stem)
def test_example_smoke_run(script: Path, data_root: Path, tmp_path: Path) -> None:
    """The script says what it shows (module docstring), has --smoke, and its smoke run exits 0 in a scratch folder."""
    source = script.read_text()
    assert ast.get_docstring(ast.parse(source)), f"{script.name} has no module docstring saying what it shows"
    assert '"--smoke"' in source, f"{script.name} has no --smoke mode"
    env = {**os.environ, "PVAE_DATA_DIR": str(data_root)}
    # Run from a scratch folder: the examples' default run folders (runs/examples/...) land there.
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SMOKE_SECONDS,
    )
    assert proc.returncode == 0, f"{script.name} --smoke exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
