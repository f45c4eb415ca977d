"""Bits per dimension, and densities trained and evaluated on dequantized 8-bit images."""

from __future__ import annotations

import csv
import importlib
import json
import math
from pathlib import Path

import pytest
import torch

from pvae.cli import EVALUATE_FLAGS, build_parser, field_docs
from pvae.data import load_data
from pvae.runs.config import TrainConfig
from pvae.runs.evaluate import Evaluation, EvaluationSettings, bits_per_dim, evaluate_run, format_table
from support import fake_config

# A module-scoped fixture here is costly to build: the file's tests share one worker (pytest-xdist).
pytestmark = pytest.mark.xdist_group("test_evaluate")

# the module, not the function pvae.train that the package re-exports under the same name
train_module = importlib.import_module("pvae.runs.train")


def test_bits_per_dim_of_discrete_data_is_nats_over_d_ln2() -> None:
    """For binary pixels, bits per dimension = nats / (784 ln 2) on a fixed example."""
    assert bits_per_dim(100.0, 784) == pytest.approx(100.0 / (784 * math.log(2)), rel=1e-15)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0, rel=1e-15)


def test_bits_per_dim_of_a_dequantized_density_adds_log_256() -> None:
    """A density of dequantized levels gains D ln 256 nats: the uniform density on [0, 1]^D is 8 bits per
    dimension, the value of coding 8-bit pixels with no model at all."""
    assert bits_per_dim(0.0, 784, dequantized=True) == pytest.approx(8.0, rel=1e-15)
    nats = -1500.0  # a density above 1 on [0, 1]^D has a negative nll
    expected = (nats + 784 * math.log(256)) / (784 * math.log(2))
    assert bits_per_dim(nats, 784, dequantized=True) == pytest.approx(expected, rel=1e-15)


def _config(root: Path, out: Path, **kw: object) -> TrainConfig:
    """tests/support.fake_config's tiny run on 200 training images for 2 epochs."""
    return fake_config(root, out, **{"train_size": 200, "epochs": 2, **kw})


def test_beta_trains_on_dequantized_images(
    fake_mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--binarization none --dequantize trains the Beta likelihood: each epoch sees a fresh draw of
    (255 x + u) / 256, inside (0, 1) and inside each pixel's own bin; evaluation reports bits per
    dimension with the 8-bit offset."""
    seen: list[torch.Tensor] = []
    loop = importlib.import_module("pvae.training.loop")  # where the loop over epochs calls train_epoch
    epoch = loop.train_epoch

    def spy(vae, objective, optimizer, x, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(x.clone())
        return epoch(vae, objective, optimizer, x, *args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", spy)
    out = tmp_path / "beta"
    result = train_module.train(_config(fake_mnist_root, out, likelihood="beta", binarization="none",
                                        dequantize=True), progress=False)
    assert all(math.isfinite(row["train_elbo"]) and math.isfinite(row["val_elbo"]) for row in result.metrics)
    assert len(seen) == 2
    levels = (load_data("mnist", fake_mnist_root, val_size=100, train_size=200).train * 255).round()
    assert bool((levels == 0).any() and (levels == 255).any()), "the test needs pixels at both ends"
    for x in seen:
        assert bool(((x > 0) & (x < 1)).all()), "dequantized pixels must lie strictly inside (0, 1)"
        # each pixel stays in its level's bin [k, k + 1] / 256 (its closure: float32 may round onto an edge)
        assert bool(((x * 256 >= levels) & (x * 256 <= levels + 1)).all()), "a pixel left its 8-bit bin"
    assert not torch.equal(seen[0], seen[1]), "each epoch must draw fresh noise u"
    evaluation = evaluate_run(out, num_samples=5, device="cpu", progress=False)
    assert evaluation["dequantized"] is True and math.isfinite(evaluation["log_px"])
    assert evaluation["neg_elbo_bits_per_dim"] == pytest.approx(
        bits_per_dim(-evaluation["elbo"], 784, dequantized=True), rel=1e-12)
    assert evaluation["nll_bits_per_dim"] == pytest.approx(
        bits_per_dim(-evaluation["log_px"], 784, dequantized=True), rel=1e-12)
    again = evaluate_run(out, num_samples=5, device="cpu", progress=False)
    assert again["elbo"] == evaluation["elbo"], "the evaluation images must be one fixed dequantization"


def test_beta_without_dequantization_names_the_fix(fake_mnist_root: Path, tmp_path: Path) -> None:
    """The Beta likelihood on raw grey levels (exact 0s and 1s) is refused, naming dequantize=True."""
    with pytest.raises(ValueError, match="dequantize=True"):
        train_module.train(_config(fake_mnist_root, tmp_path / "r", likelihood="beta", binarization="none"),
                           progress=False)
    assert not (tmp_path / "r" / "config.json").exists()


def test_binary_runs_report_bits_per_dim_without_offset(fake_mnist_root: Path, tmp_path: Path) -> None:
    """A Bernoulli run's bits per dimension is its nll over D ln 2, as is a discretized logistic's; a
    density of grey levels that were not dequantized gets none (it is no likelihood of the 8-bit data)."""
    out = tmp_path / "bern"
    train_module.train(_config(fake_mnist_root, out, epochs=1), progress=False)
    evaluation = evaluate_run(out, num_samples=5, device="cpu", progress=False)
    assert evaluation["nll_bits_per_dim"] == pytest.approx(-evaluation["log_px"] / (784 * math.log(2)), rel=1e-12)
    levels = tmp_path / "levels"  # a discretized likelihood gives probabilities of the 8-bit levels
    train_module.train(_config(fake_mnist_root, levels, epochs=1, binarization="none",
                               likelihood="discretized-logistic"), progress=False)
    logistic = evaluate_run(levels, num_samples=5, device="cpu", progress=False)
    assert logistic["nll_bits_per_dim"] == pytest.approx(-logistic["log_px"] / (784 * math.log(2)), rel=1e-12)
    grey = tmp_path / "grey"
    train_module.train(_config(fake_mnist_root, grey, epochs=1, binarization="none", likelihood="gaussian"),
                       progress=False)
    saved = evaluate_run(grey, device="cpu", progress=False)
    assert "neg_elbo_bits_per_dim" not in saved and "nll_bits_per_dim" not in saved, saved
    assert json.loads((grey / "evaluation.json").read_text())["dequantized"] is False


@pytest.fixture(scope="module")
def small_run(fake_mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default-shaped VAE trained for two epochs on the fake MNIST."""
    out = tmp_path_factory.mktemp("eval") / "run"
    train_module.train(_config(fake_mnist_root, out), progress=False)
    return out


def test_ais_evaluation_writes_its_estimate_and_per_image_rows(small_run: Path) -> None:
    """--method ais records its settings and the estimate; per_image.csv holds the same numbers image by image,
    with kl_gap = log_px - elbo, and the ELBO is the same as without AIS (same seed)."""
    plain = evaluate_run(small_run, num_images=40, device="cpu", progress=False)
    result = evaluate_run(small_run, num_images=40, method="ais", num_steps=8, num_leapfrog=3, num_chains=2,
                          device="cpu", progress=False)
    assert result["method"] == "ais" and result["num_images"] == 40
    assert (result["ais_num_steps"], result["ais_num_leapfrog"], result["ais_num_chains"]) == (8, 3, 2)
    assert result["elbo"] == plain["elbo"], "the ELBO must not depend on the log p(x) method"
    rows = list(csv.DictReader((small_run / "per_image.csv").read_text().splitlines()))
    assert len(rows) == 40
    log_px = torch.tensor([float(r["log_px"]) for r in rows], dtype=torch.float64)
    elbo = torch.tensor([float(r["elbo"]) for r in rows], dtype=torch.float64)
    assert result["log_px"] == pytest.approx(log_px.mean().item(), abs=1e-5)  # the CSV rounds to 1e-6
    torch.testing.assert_close(torch.tensor([float(r["kl_gap"]) for r in rows], dtype=torch.float64), log_px - elbo,
                               atol=2e-6, rtol=0)
    assert 0 <= result["ais_acceptance_rate_mean"] <= 1
    assert json.loads((small_run / "evaluation.json").read_text())["method"] == "ais"


def test_bdmc_evaluation_sandwiches_simulated_images(small_run: Path) -> None:
    """--method bdmc writes both bounds for the simulated images; bdmc.csv has one row per image whose
    gap is upper - lower, and the means match evaluation.json."""
    result = evaluate_run(small_run, num_images=10, method="bdmc", num_steps=20, num_leapfrog=3, bdmc_images=12,
                          device="cpu", progress=False)
    assert result["method"] == "bdmc" and result["bdmc_num_images"] == 12
    rows = list(csv.DictReader((small_run / "bdmc.csv").read_text().splitlines()))
    assert len(rows) == 12
    for r in rows:
        assert float(r["gap"]) == pytest.approx(float(r["upper"]) - float(r["lower"]), abs=3e-6)
    assert result["bdmc_lower"] == pytest.approx(sum(float(r["lower"]) for r in rows) / 12, abs=1e-5)
    assert result["bdmc_gap"] > -3 * result["bdmc_gap_stderr"], "the sandwich is upside down beyond noise"


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(method="ais"), "needs num_steps=T"),
    (dict(method="ais", num_steps=5, num_samples=10), "importance sampling's"),
    (dict(method="is", num_steps=5), "num_steps=T sets the annealing"),
    (dict(method="mcmc"), "unknown method"),
    (dict(method="bdmc", num_steps=5, num_chains=0), "expected num_chains=N >= 1, got num_chains=0"),
    (dict(num_images=0), "expected num_images=N in"),
    (dict(num_images=10**6), r"expected num_images=N in \[1, "),
])
def test_bad_method_settings_are_one_line(small_run: Path, kwargs: dict[str, object], message: str) -> None:
    """Settings that do not fit the method are refused in one line, and evaluation.json is left as it was."""
    before = (small_run / "evaluation.json").read_bytes() if (small_run / "evaluation.json").exists() else None
    with pytest.raises(ValueError, match=message) as err:
        evaluate_run(small_run, device="cpu", progress=False, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
    after = (small_run / "evaluation.json").read_bytes() if (small_run / "evaluation.json").exists() else None
    assert after == before


# evaluation.json as the code before Evaluation wrote it (pvae evaluate RUN --num-samples 100, and
# --method ais --steps 20 --num-images 200 --leapfrog 5, on a one-epoch VAE), and as the first version did.
OLD_IS_JSON = """{
  "split": "test",
  "dataset": "mnist",
  "model": "vae",
  "binarization": "dynamic",
  "dequantized": false,
  "eval_binarization_seed": 0,
  "num_images": 10000,
  "elbo": -207.60719299316406,
  "elbo_stderr": 0.4707149565219879,
  "reconstruction": -207.02293395996094,
  "kl": 0.5842841267585754,
  "kl_analytic": true,
  "kl_by_site": {
    "z": 0.5842841267585754
  },
  "kl_analytic_by_site": {
    "z": true
  },
  "conditioned_on_label": false,
  "elbo_samples": 1,
  "seed": 0,
  "checkpoint": "checkpoint.pt",
  "epoch": 1,
  "seconds": 0.595986086000039,
  "log_px": -205.80296037016487,
  "log_px_stderr": 0.46595677734166985,
  "num_samples": 100,
  "elbo_is": -207.59204590046312,
  "elbo_is_from": "the same draws",
  "kl_gap": 1.789085530298204,
  "kl_gap_stderr": 0.007511903937662442,
  "ess_mean": 13.967521664257644,
  "pareto_k_mean": 0.631064637184081,
  "pareto_k_above_0_7": 0.3769,
  "active_units": 2,
  "active_units_by_site": {
    "z": 2
  },
  "log_px_seconds": 29.98264201900008,
  "neg_elbo_bits_per_dim": 0.3820329946225966,
  "nll_bits_per_dim": 0.3787128958243683,
  "method": "is",
  "files": [
    "evaluation.json",
    "per_image.csv"
  ]
}"""
OLD_AIS_JSON = """{
  "split": "test",
  "dataset": "mnist",
  "model": "vae",
  "binarization": "dynamic",
  "dequantized": false,
  "eval_binarization_seed": 0,
  "num_images": 200,
  "elbo": -199.02371215820312,
  "elbo_stderr": 2.9789774417877197,
  "reconstruction": -198.4263916015625,
  "kl": 0.5973606705665588,
  "kl_analytic": true,
  "kl_by_site": {
    "z": 0.5973606705665588
  },
  "kl_analytic_by_site": {
    "z": true
  },
  "conditioned_on_label": false,
  "elbo_samples": 1,
  "seed": 0,
  "checkpoint": "checkpoint.pt",
  "epoch": 1,
  "seconds": 0.0165794410000899,
  "log_px": -199.2920103452599,
  "log_px_stderr": 2.9970963831250574,
  "log_px_seconds": 0.6286374649999971,
  "ais_direction": "forward",
  "ais_num_steps": 20,
  "ais_num_leapfrog": 5,
  "ais_num_chains": 1,
  "ais_schedule": "sigmoid",
  "ais_proposal": "guide",
  "ais_initial_step_size": 0.01,
  "ais_target_acceptance": 0.65,
  "ais_acceptance_rate_mean": 0.999991408900211,
  "ais_step_size_mean": 0.014568106271326542,
  "ais_ess_mean": 1.0,
  "kl_gap": -0.2682671354210639,
  "kl_gap_stderr": 0.1784818100916444,
  "active_units": 1,
  "active_units_by_site": {
    "z": 1
  },
  "neg_elbo_bits_per_dim": 0.3662379114157553,
  "nll_bits_per_dim": 0.36673162629323786,
  "method": "ais",
  "files": [
    "evaluation.json",
    "per_image.csv"
  ]
}"""
# A BDMC evaluation as the code before Evaluation wrote it (300-image run, 1 epoch, T=5, L=2, M=4).
OLD_BDMC_JSON = """{
  "split": "test",
  "dataset": "mnist",
  "model": "vae",
  "binarization": "dynamic",
  "dequantized": false,
  "eval_binarization_seed": 0,
  "num_images": 10,
  "elbo": -201.77890014648438,
  "elbo_stderr": 14.436007499694824,
  "reconstruction": -201.3385009765625,
  "kl": 0.4403823912143707,
  "kl_analytic": true,
  "kl_by_site": {
    "z": 0.4403823912143707
  },
  "kl_analytic_by_site": {
    "z": true
  },
  "conditioned_on_label": false,
  "elbo_samples": 1,
  "seed": 0,
  "checkpoint": "checkpoint.pt",
  "epoch": 1,
  "seconds": 0.008332811999935075,
  "bdmc_num_images": 4,
  "bdmc_lower": -202.65925069914022,
  "bdmc_lower_stderr": 4.013834449764607,
  "bdmc_upper": -197.5352923958342,
  "bdmc_upper_stderr": 2.948318657081063,
  "bdmc_gap": 5.12395830330604,
  "bdmc_gap_stderr": 3.719837374787467,
  "bdmc_forward_seconds": 0.03215291500055173,
  "bdmc_reverse_seconds": 0.0319932840002366,
  "ais_num_steps": 5,
  "ais_num_leapfrog": 2,
  "ais_num_chains": 1,
  "ais_schedule": "sigmoid",
  "ais_proposal": "guide",
  "ais_initial_step_size": 0.01,
  "ais_target_acceptance": 0.65,
  "neg_elbo_bits_per_dim": 0.37130793188439076,
  "method": "bdmc",
  "files": [
    "evaluation.json",
    "bdmc.csv"
  ]
}"""
FIRST_VERSION_JSON = """{"split": "test", "dataset": "mnist", "binarization": "dynamic", "eval_binarization_seed": 0,
"num_images": 10000, "elbo": -99.5, "elbo_stderr": 0.3, "reconstruction": -75.0, "kl": 24.5, "kl_analytic": true,
"elbo_samples": 1, "epoch": 10, "seconds": 2.5}"""


@pytest.mark.parametrize("text", [OLD_IS_JSON, OLD_AIS_JSON, OLD_BDMC_JSON, FIRST_VERSION_JSON],
                         ids=["is", "ais", "bdmc", "first-version"])
def test_evaluation_json_of_earlier_versions_reads_back(text: str) -> None:
    """An evaluation.json written before Evaluation existed loads, and writes back the same keys in the same order."""
    evaluation = Evaluation.from_json(text)
    assert evaluation.to_dict() == json.loads(text), evaluation.to_dict()
    assert list(evaluation.to_dict()) == list(json.loads(text)), list(evaluation.to_dict())
    assert evaluation["elbo"] == evaluation.elbo == json.loads(text)["elbo"]
    assert format_table(evaluation).splitlines()[0].startswith("mnist test set"), format_table(evaluation)


def test_old_evaluation_table_reads_as_before() -> None:
    """format_table of an old importance-sampling evaluation prints the numbers pvae evaluate printed then."""
    table = format_table(Evaluation.from_json(OLD_IS_JSON))
    for line in ("  log p(x), importance sampling, K=100               -205.803 ± 0.466",
                 "    KL(q(z|x) || p(z|x)) = log p(x) - ELBO           1.789 ± 0.008",
                 "  -log p(x) in bits per dimension (lower is better)  0.3787"):
        assert line in table.splitlines(), table


def test_an_object_without_an_evaluations_keys_is_refused() -> None:
    """A JSON object missing a key every version wrote is refused in one line naming it."""
    with pytest.raises(ValueError, match="expected an evaluation with the keys elbo"):
        Evaluation.from_json('{"split": "test", "dataset": "mnist", "binarization": "dynamic", '
                             '"eval_binarization_seed": 0, "num_images": 1, "elbo_stderr": 0, "reconstruction": 0, '
                             '"kl": 0, "kl_analytic": true, "elbo_samples": 1, "epoch": 1, "seconds": 0}')


def test_evaluate_flags_come_from_the_settings_docstring() -> None:
    """pvae evaluate has one flag per EvaluationSettings field, its help the field's :param: entry, its default the field's."""
    parser = build_parser()
    evaluate = parser._subparsers._group_actions[0].choices["evaluate"]  # type: ignore[union-attr]
    actions = {action.dest: action for action in evaluate._actions}
    docs = field_docs(EvaluationSettings.__doc__ or "")
    defaults = EvaluationSettings()
    for name, flag in EVALUATE_FLAGS.items():
        action = actions[name]
        assert action.option_strings == [flag], (name, action.option_strings)
        assert action.default == getattr(defaults, name), (name, action.default)
        if name != "progress":
            assert action.help is not None and action.help.startswith(docs[name].rstrip(".")), (name, action.help)
    args = parser.parse_args(["evaluate", "RUN", "--steps", "5", "--method", "ais", "--chains", "2", "--no-progress"])
    settings = EvaluationSettings(**{name: getattr(args, name) for name in EVALUATE_FLAGS})
    assert settings == EvaluationSettings(method="ais", num_steps=5, num_chains=2, progress=False), settings
    assert settings.ais().num_chains == 2 and settings.ais().chunk_size == settings.chunk_size
