"""The speed benchmarks under bench/ still run: each on a tiny problem, checked for the lines it must
print (CI never times them; these runs only keep the scripts from rotting)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pvae import TrainConfig, train

BENCH = Path(__file__).resolve().parent.parent / "bench"
RATIO = re.compile(r"^ratio pvae / hand-written = (\d+\.\d+)", re.MULTILINE)


def _run(script: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--threads", "1", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_train_speed_bench_runs(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/train_speed.py trains all three implementations on the same blocks and prints their ratio."""
    out = _run("train_speed.py", "--repeats", "1", "--block-steps", "2", "--val-size", "100",
               "--data-dir", str(fake_mnist_root), cwd=tmp_path)
    assert RATIO.search(out) and "plain Pyro" in out and "N=500, batch 100" in out, out
    # all three trained on the same minibatches from the same weights: their ELBOs agree to Monte-Carlo
    # noise (a fraction of a nat here); a wrong minibatch scale would put one off by tens of nats
    elbos = [float(v) for v in re.search(r"train elbo \(nats/image\) (.+)$", out, re.MULTILINE).group(1).split(", ")]
    assert len(elbos) == 3 and max(elbos) - min(elbos) < 5.0, out


@pytest.mark.parametrize("validate", [False, True], ids=["validation-off", "validation-on"])
def test_log_px_speed_bench_runs(fake_mnist_root: Path, tmp_path: Path, validate: bool) -> None:
    """bench/log_px_speed.py estimates log p(x) of a run's test images both ways and prints their ratio."""
    run = tmp_path / "run"
    train(TrainConfig(data_dir=str(fake_mnist_root), val_size=100, z_dim=2, hidden=(16,), batch_size=50, epochs=1,
                      device="cpu", out=str(run)), progress=False)
    args = ["--run", str(run), "--num-images", "20", "--num-samples", "10", "--repeats", "1", "--block-images", "10",
            "--loop-images", "2", "--data-dir", str(fake_mnist_root)]
    out = _run("log_px_speed.py", *args, *(["--validate"] if validate else []), cwd=tmp_path)
    assert RATIO.search(out) and "one image at a time" in out, out
    means = re.search(r"mean log p\(x\) pvae (-?\d+\.\d+), hand-written (-?\d+\.\d+)", out)
    assert means and abs(float(means.group(1)) - float(means.group(2))) < 2.0, out


def test_model_speed_bench_runs(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/model_speed.py checks each model's hand-written loss against pvae's, times both and tabulates them."""
    out = _run("model_speed.py", "--model", "all", "--repeats", "1", "--train-size", "200", "--val-size", "100",
               "--labels", "20", "--block-steps", "1", "--data-dir", str(fake_mnist_root), cwd=tmp_path)
    for kind in ("hierarchical", "conditional", "m2"):
        # the hand-written loss equals pvae's on the same draws, values and gradients
        assert re.search(rf"^check {kind} .* ok$", out, re.MULTILINE), out
        row = re.search(rf"^{kind} +(\d+\.\d+) +(\d+\.\d+) +(\d+\.\d+) .* (\d+\.\d+)%  (\w+) ", out, re.MULTILINE)
        # same minibatches from the same weights: the train ELBOs agree to Monte-Carlo noise
        assert row and float(row.group(4)) < 5.0, out
        assert row.group(5) == ("eager" if kind == "m2" else "jit"), out
    assert "N=200, batch 100" in out, out


def test_log_px_quality_bench_runs_for_both_models(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/log_px_quality.py trains the one- and two-layer models and prints a row with log p(x) and active units per layer."""
    out = _run("log_px_quality.py", "--models", "vae", "hierarchical", "--objectives", "trace", "--epochs", "1",
               "--train-size", "200", "--val-size", "100", "--num-images", "20", "--num-samples", "10",
               "--data-dir", str(fake_mnist_root), "--out-dir", str(tmp_path / "q"), cwd=tmp_path)
    assert re.search(r"^vae\s+trace\s+1 ", out, re.MULTILINE) and re.search(r"^hierarchical\s+trace\s+1 ", out, re.MULTILINE), out
    assert "'z2':" in out and "'z1':" in out, out


def test_m2_supervised_baseline_bench_runs(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/m2_supervised_baseline.py fits q(y|x) to the labelled images alone and prints its test error."""
    out = _run("m2_supervised_baseline.py", "--labels", "100", "--label-seeds", "0", "--steps", "5", "--val-size", "100",
               "--data-dir", str(fake_mnist_root), cwd=tmp_path)
    assert re.search(r"100 labels, label seed 0: supervised-only test error \d+\.\d+%", out), out


def test_ais_speed_bench_runs(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/ais_speed.py trains a tiny model, times pvae's AIS beside a hand-written one on the same
    draws and schedule, and prints their ratio."""
    out = _run("ais_speed.py", "--smoke", "--data-dir", str(fake_mnist_root), "--train-out", str(tmp_path / "r"),
               cwd=tmp_path)
    assert RATIO.search(out), out


def test_ais_vs_is_bench_runs(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/ais_vs_is.py puts IS and AIS side by side on a run's test images and prints BDMC's sandwich."""
    run = tmp_path / "run"
    train(TrainConfig(data_dir=str(fake_mnist_root), val_size=100, z_dim=2, hidden=(16,), batch_size=50, epochs=1,
                      device="cpu", out=str(run)), progress=False)
    out = _run("ais_vs_is.py", "--smoke", "--run", str(run), "--data-dir", str(fake_mnist_root), cwd=tmp_path)
    assert "AIS" in out and "IS" in out and "BDMC" in out, out


def _converged(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / "converged.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"converged.py exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_converged_components_bench_trains_resumes_and_measures(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/converged.py components: one row per prior or guide, in run folders a second call
    resumes (here: finds complete) and does not measure again."""
    args = ("components", "--root", str(tmp_path / "runs"), "--epochs", "1", "--kl-warmup", "1", "--train-size",
            "100", "--val-size", "100", "--iw-samples", "5", "--iw-images", "10", "--only", "^normal/diagonal|mog",
            "--data-dir", str(fake_mnist_root))
    first = _converged(*args, cwd=tmp_path)
    rows = [line for line in first.splitlines() if line.startswith("| baseline") or line.startswith("| prior")]
    assert len(rows) == 2 and "mog:10" in rows[1], first
    assert _converged(*args, cwd=tmp_path).splitlines()[-2:] == first.splitlines()[-2:]


def test_converged_figure_draws_curves_and_refuses_bad_input(tmp_path: Path) -> None:
    """bench/converged.py figure: a PNG from curve.json files; a file that is not one, or a reference
    that is not a number, is refused with one line naming it."""
    (tmp_path / "curve.json").write_text(json.dumps({"curve": [{"epoch": 1, "log_px": -110.0, "log_px_stderr": 1.0},
                                                               {"epoch": 4, "log_px": -100.0, "log_px_stderr": 0.9}]}))
    out = _converged("figure", "--curve", "k = 1", "curve.json", "--reference", "paper", "-86.76", "--out", "c.png",
                     cwd=tmp_path)
    assert out.strip().endswith("c.png") and (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "other.json").write_text("{}")
    for args, message in ((("--curve", "x", "other.json"), "expected the curve.json"),
                          (("--curve", "x", "curve.json", "--reference", "paper", "86.x"), "expected a log p(x)")):
        proc = subprocess.run([sys.executable, str(BENCH / "converged.py"), "figure", *args, "--out", "bad.png"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and message in proc.stderr and not (tmp_path / "bad.png").exists(), proc.stderr


def test_gpu_convergence_script_runs_on_cpu_at_a_tiny_budget(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/gpu_convergence.sh: both models through the schedule's first 2 stages, the curve at each
    stage end, the numbers and the curves' figure in one folder."""
    env = {"PVAE_DATA_DIR": str(fake_mnist_root), "PYTHON": sys.executable, "DEVICE": "cpu", "STAGES": "2",
           "BATCH": "100", "K": "5", "CURVE_IMAGES": "20", "FINAL_IMAGES": "20", "TRAIN_SIZE": "100",
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(BENCH / "gpu_convergence.sh"), str(tmp_path / "out")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert summary.count("4 of 4 epochs done") == 2 and summary.count("| 1 | 4 |") == 2, summary
    for model in ("vae", "hierarchical"):
        assert (tmp_path / "out" / f"curve-{model}.json").is_file()
        assert (tmp_path / "out" / f"metrics-{model}.csv").read_text().count("\n") == 5
    assert (tmp_path / "out" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_distributed_speed_bench_runs(fake_mnist_root: Path, tmp_path: Path) -> None:
    """bench/distributed_speed.py launches torchrun with 1 and 2 processes and prints their throughput."""
    proc = subprocess.run([sys.executable, str(BENCH / "distributed_speed.py"), "--procs", "1", "2", "--repeats", "1",
                           "--epochs", "2", "--train-size", "200", "--val-size", "100", "--batch-size", "50",
                           "--data-dir", str(fake_mnist_root), "--extra", "--z-dim", "2", "--hidden", "16"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and rows[0].endswith("| 1.00 | 1.00 |"), proc.stdout
