"""The ``evaluate`` step of a run folder: the test set's ELBO and its terms per latent site
(:mod:`pvae.inference.elbo`) and log p(x) by importance sampling, AIS or BDMC, for any graphical
model (read from its traces), written to ``evaluation.json`` and ``per_image.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyro
import torch
from torch import Tensor

from pvae.data import EVAL_BINARIZATION_SEED, fixed_eval_set
from pvae.devices import DEVICES, forked_rng, resolve_device
from pvae.distributed import SINGLE, World, current_world
from pvae.inference.ais import AISSettings
from pvae.inference.elbo import active_units_by_site, classify, elbo_terms
from pvae.inference.importance import DEFAULT_CHUNK_SIZE, importance_estimate
from pvae.inference.structure import ModelStructure, model_structure
from pvae.inference.traces import check_data_support
from pvae.protocol import GraphicalModel, label_mode
from pvae.runs.checkpoint import atomic_write_text
from pvae.runs.folder import EVALUATION, PER_IMAGE, default_checkpoint, open_run
from pvae.runs.sharding import by_blocks

__all__ = [
    "Evaluation",
    "EvaluationSettings",
    "evaluate_run",
    "evaluate_with",
    "bits_per_dim",
    "format_table",
    "PER_IMAGE",
    "PER_IMAGE_FIELDS",
    "METHODS",
    "SPLITS",
    "DEVICES",
    "SETTING_CHOICES",
    "BDMC_CSV",
]

PER_IMAGE_FIELDS = ("index", "label", "elbo", "log_px", "kl_gap", "ess", "pareto_k")
#: How ``evaluate_run`` estimates log p(x): importance sampling, AIS, or the BDMC sandwich.
METHODS = ("is", "ais", "bdmc")
#: The splits an evaluation can be of.
SPLITS = ("test", "val")
#: The settings of :class:`EvaluationSettings` that take one of a few values, and those values.
SETTING_CHOICES: dict[str, tuple[str, ...]] = {"split": SPLITS, "method": METHODS, "device": DEVICES}
#: BDMC's per-image bounds on the simulated images.
BDMC_CSV = "bdmc.csv"
#: Most images per block of an AIS evaluation (fewer when chunk_size / chains is smaller): its draws
#: are seeded per block (pvae.runs.sharding), and a distributed evaluation deals the blocks to its processes.
AIS_BLOCK_IMAGES = 1000


@dataclass(frozen=True)
class EvaluationSettings:
    """How a run is evaluated: ``pvae evaluate``'s options, one per field (their help is written here).

    :param checkpoint: the checkpoint of RUN to evaluate: checkpoint.pt (the last epoch), best.pt
        (the best validation ELBO, kept by --patience) or checkpoint-EPOCH.pt (kept by
        --keep-epochs); one other than the default writes evaluation-NAME.json (default: best.pt
        where the run has one, else checkpoint.pt).
    :param split: the images to evaluate on: the test set, or the run's validation split.
    :param num_images: evaluate the split's first N images only (when not given, all of them).
    :param elbo_samples: draws of the latents per image for the ELBO's Monte Carlo terms.
    :param num_samples: also estimate log p(x) by importance sampling with K draws per image, e.g.
        5000, and write RUN/per_image.csv (when not given, no log p(x)).
    :param method: how log p(x) is estimated: is (importance sampling with --num-samples K), ais
        (annealed importance sampling with HMC from the guide, Wu et al. 2017, with --steps T) or
        bdmc (forward and reverse AIS on images simulated from the model: a lower and an upper
        bound on their log p(x), Grosse et al. 2015; writes RUN/bdmc.csv).
    :param num_steps: annealing steps of --method ais or bdmc, e.g. 500 (a sigmoid schedule).
    :param num_leapfrog: leapfrog steps per HMC transition of ais and bdmc.
    :param num_chains: independent AIS chains per image, combined by log-mean-exp.
    :param bdmc_images: images bdmc simulates from the model.
    :param chunk_size: most (sample, image) pairs per pass of the log p(x) estimator; memory grows
        with it (default: 4096, tens of MB for 784 pixels; on a GPU try 65536).
    :param data_dir: where the dataset is, if not where the run found it.
    :param device: where to evaluate: auto (CUDA when available), cpu or cuda.
    :param seed: seed of the draws of the latents: evaluating twice gives the same numbers.
    :param progress: show a progress bar while log p(x) is estimated (when not given, only when
        the error stream is a terminal).
    :raises ValueError: in ``__post_init__``, one line naming the setting, for settings that do not
        fit the method, before anything is loaded.
    """

    checkpoint: str | None = None
    split: Literal["test", "val"] = "test"
    num_images: int | None = None
    elbo_samples: int = 1
    num_samples: int | None = None
    method: Literal["is", "ais", "bdmc"] = "is"
    num_steps: int | None = None
    num_leapfrog: int = 10
    num_chains: int = 1
    bdmc_images: int = 100
    chunk_size: int = DEFAULT_CHUNK_SIZE
    data_dir: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be 'test' or 'val', got {self.split!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name in ("elbo_samples", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name}=N >= 1, got {name}={getattr(self, name)}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"expected num_samples=K >= 1, e.g. num_samples=5000; got num_samples={self.num_samples}")
        if self.num_images is not None and self.num_images < 1:
            raise ValueError(f"expected num_images=N in [1, the split's size], got num_images={self.num_images}")
        self._check_method()

    def _check_method(self) -> None:
        """Refuse settings that do not fit the method, in one line each, before anything is loaded."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of: {', '.join(METHODS)}")
        if self.method == "is":
            if self.num_steps is not None:
                raise ValueError("num_steps=T sets the annealing of method='ais' or method='bdmc'; importance sampling "
                                 "takes num_samples=K")
            return
        if self.num_samples is not None:
            raise ValueError(f"num_samples=K is importance sampling's; method={self.method!r} takes num_steps=T "
                             "(with num_leapfrog=L and num_chains=C)")
        if self.num_steps is None or self.num_steps < 1:
            given = "none" if self.num_steps is None else self.num_steps
            raise ValueError(f"method={self.method!r} needs num_steps=T >= 1 annealing steps, e.g. num_steps=500; "
                             f"got {given}")
        for name in ("num_leapfrog", "num_chains", "bdmc_images"):
            if (value := getattr(self, name)) < 1:
                raise ValueError(f"expected {name}=N >= 1, got {name}={value}")

    def ais(self) -> AISSettings:
        """The AIS path of ``method`` ``ais`` or ``bdmc``: T, L, C and the chunk size, the rest as
        :class:`~pvae.inference.ais.AISSettings` has them."""
        if self.num_steps is None:
            raise ValueError(f"method={self.method!r} has no annealing path; method='ais' or method='bdmc' takes "
                             "num_steps=T")
        return AISSettings(num_steps=self.num_steps, num_leapfrog=self.num_leapfrog, num_chains=self.num_chains,
                           chunk_size=self.chunk_size)


# The keys of evaluation.json, in the order they are written: those of every evaluation, a
# semi-supervised model's classification, each method's, bits per dimension, then how it was made.
_CORE_KEYS = ("split", "dataset", "model", "binarization", "dequantized", "eval_binarization_seed", "num_images",
              "elbo", "elbo_stderr", "reconstruction", "kl", "kl_analytic", "kl_by_site", "kl_analytic_by_site",
              "conditioned_on_label", "elbo_samples", "seed", "checkpoint", "epoch", "seconds")
_LABEL_KEYS = ("label_site", "discrete_latents", "classification_error")
_IS_KEYS = ("log_px", "log_px_stderr", "num_samples", "elbo_is", "elbo_is_from", "kl_gap", "kl_gap_stderr", "ess_mean",
            "pareto_k_mean", "pareto_k_above_0_7", "active_units", "active_units_by_site", "log_px_seconds")
_AIS_PATH_KEYS = ("ais_num_steps", "ais_num_leapfrog", "ais_num_chains", "ais_schedule", "ais_proposal",
                  "ais_initial_step_size", "ais_target_acceptance")
_AIS_KEYS = ("log_px", "log_px_stderr", "log_px_seconds", "ais_direction", *_AIS_PATH_KEYS,
             "ais_acceptance_rate_mean", "ais_step_size_mean", "ais_ess_mean", "kl_gap", "kl_gap_stderr",
             "active_units", "active_units_by_site")
_BDMC_KEYS = ("bdmc_num_images", "bdmc_lower", "bdmc_lower_stderr", "bdmc_upper", "bdmc_upper_stderr", "bdmc_gap",
              "bdmc_gap_stderr", "bdmc_forward_seconds", "bdmc_reverse_seconds", *_AIS_PATH_KEYS)
_BITS_KEYS = ("neg_elbo_bits_per_dim", "nll_bits_per_dim")
#: Written even when null: the seed of grey levels, and how log p(x) was estimated (none without it).
_NULLABLE = ("eval_binarization_seed", "method")


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a run, as ``evaluation.json`` holds it (the fields are its keys): numbers in
    nats per image, higher is better, means over the evaluated images. ``None``: not measured by
    this evaluation (or not recorded by the version of pvae that wrote it).

    It reads like the JSON object too (``evaluation["elbo"]``, ``.get``, ``in``), as evaluations
    did when they were dicts.

    :ivar elbo: the ELBO, with ``elbo_stderr`` (standard error of the mean over images),
        ``reconstruction`` (E_q[log p(x | latents)]) and ``kl`` (the sum of the latent sites' terms,
        each in ``kl_by_site``, ``kl_analytic_by_site`` saying which are in closed form).
    :ivar split: ``test`` or ``val``; ``binarization``, ``dequantized`` and
        ``eval_binarization_seed`` say what the images were.
    :ivar label_site: a semi-supervised model's label site, summed out exactly
        (``discrete_latents``), with the ``classification_error`` of argmax q(y|x).
    :ivar log_px: log p(x) (log p(x | y) when ``conditioned_on_label``) by ``method``: importance
        sampling with K = ``num_samples`` (``elbo_is``, ``ess_mean``, ``pareto_k_mean``,
        ``pareto_k_above_0_7``), or AIS (the ``ais_`` settings and diagnostics); ``kl_gap`` =
        log p(x) - ELBO estimates E_x KL(q(z|x) || p(z|x)); ``active_units`` (Burda et al. 2016:
        units with Cov_x E_q[z] > 0.01).
    :ivar bdmc_lower: with ``method`` ``bdmc``, forward AIS on images simulated from the model, and
        ``bdmc_upper`` reverse AIS: a sandwich of their log p(x) (Grosse et al. 2015).
    :ivar neg_elbo_bits_per_dim: -ELBO in bits per dimension where the numbers are likelihoods of the
        8-bit or binary images (:func:`bits_per_dim`), and ``nll_bits_per_dim`` for -log p(x).
    :ivar files: the files this evaluation wrote in the run folder.
    :ivar other: keys of an ``evaluation.json`` that this version does not know, kept as they were.
    :ivar absent: keys written even when null (``method``, ``eval_binarization_seed``) that an older
        ``evaluation.json`` did not have, so that it is written back as it was.
    """

    split: str
    dataset: str
    binarization: str
    eval_binarization_seed: int | None
    num_images: int
    elbo: float
    elbo_stderr: float
    reconstruction: float
    kl: float
    kl_analytic: bool
    elbo_samples: int
    epoch: int
    seconds: float
    model: str | None = None
    dequantized: bool | None = None
    kl_by_site: dict[str, float] | None = None
    kl_analytic_by_site: dict[str, bool] | None = None
    conditioned_on_label: bool | None = None
    seed: int | None = None
    checkpoint: str | None = None
    label_site: str | None = None
    discrete_latents: str | None = None
    classification_error: float | None = None
    log_px: float | None = None
    log_px_stderr: float | None = None
    log_px_seconds: float | None = None
    num_samples: int | None = None
    elbo_is: float | None = None
    elbo_is_from: str | None = None
    kl_gap: float | None = None
    kl_gap_stderr: float | None = None
    ess_mean: float | None = None
    pareto_k_mean: float | None = None
    pareto_k_above_0_7: float | None = None
    active_units: int | None = None
    active_units_by_site: dict[str, int] | None = None
    ais_direction: str | None = None
    ais_num_steps: int | None = None
    ais_num_leapfrog: int | None = None
    ais_num_chains: int | None = None
    ais_schedule: str | None = None
    ais_proposal: str | None = None
    ais_initial_step_size: float | None = None
    ais_target_acceptance: float | None = None
    ais_acceptance_rate_mean: float | None = None
    ais_step_size_mean: float | None = None
    ais_ess_mean: float | None = None
    bdmc_num_images: int | None = None
    bdmc_lower: float | None = None
    bdmc_lower_stderr: float | None = None
    bdmc_upper: float | None = None
    bdmc_upper_stderr: float | None = None
    bdmc_gap: float | None = None
    bdmc_gap_stderr: float | None = None
    bdmc_forward_seconds: float | None = None
    bdmc_reverse_seconds: float | None = None
    neg_elbo_bits_per_dim: float | None = None
    nll_bits_per_dim: float | None = None
    method: str | None = None
    files: list[str] | None = None
    other: dict[str, Any] = field(default_factory=dict)
    absent: tuple[str, ...] = ()

    def _written(self, key: str) -> bool:
        value = getattr(self, key)
        if value is not None:
            return True
        if key in _NULLABLE:
            return key not in self.absent
        # null inside a measured part: one image has no active units; T = 1 makes no HMC move
        if key == "active_units":
            return self.log_px is not None and self.method != "bdmc"
        if key == "ais_target_acceptance":
            return self.ais_num_steps is not None
        # only AIS itself reports its chains' acceptance (BDMC's two directions write their own files)
        return key == "ais_acceptance_rate_mean" and self.method == "ais"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``evaluation.json``: the keys it had when written, in the same order."""
        part = _AIS_KEYS if self.method == "ais" else _BDMC_KEYS if self.method == "bdmc" else _IS_KEYS
        order = dict.fromkeys((*_CORE_KEYS, *_LABEL_KEYS, *part, *_BITS_KEYS, "method", "files",
                               *(f.name for f in dataclasses.fields(self) if f.name not in ("other", "absent"))))
        return {**{key: getattr(self, key) for key in order if self._written(key)}, **self.other}

    def to_json(self) -> str:
        """``evaluation.json``'s text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        """An evaluation from its JSON object, as any version of pvae wrote it.

        :raises ValueError: when a key every version wrote is missing (it is no evaluation).
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"other", "absent"}
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(f"expected an evaluation with the keys {', '.join(missing)}, got an object without them; "
                             "run pvae evaluate again")
        return cls(**{k: v for k, v in data.items() if k in known},
                   other={k: v for k, v in data.items() if k not in known},
                   absent=tuple(key for key in _NULLABLE if key not in data))

    @classmethod
    def from_json(cls, text: str) -> Evaluation:
        """An evaluation from ``evaluation.json``'s text (:meth:`from_dict`)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected an evaluation as a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    # Read like the JSON object, as evaluations were dicts before.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of a key of the JSON object, or ``default`` where it has none."""
        return self.to_dict().get(key, default)

    def keys(self) -> list[str]:
        """The keys of the JSON object, in order."""
        return list(self.to_dict())


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    num_images: int | None = None,
    elbo_samples: int = 1,
    num_samples: int | None = None,
    method: str = "is",
    num_steps: int | None = None,
    num_leapfrog: int = 10,
    num_chains: int = 1,
    bdmc_images: int = 100,
    data_dir: str | None = None,
    device: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    progress: bool | None = None,
    checkpoint: str | None = None,
) -> Evaluation:
    """Evaluate a run folder's model on a split and write ``<run_dir>/evaluation.json``.

    The parameters are the fields of :class:`EvaluationSettings`, which say what each one does
    (``pvae evaluate`` has one option per field); :func:`evaluate_with` takes them as one object.
    In short: ``num_samples`` K adds log p(x) by importance sampling
    (:func:`pvae.inference.importance.importance_estimate`) and writes ``per_image.csv``;
    ``method="ais"`` estimates it by AIS with ``num_steps`` T (:func:`pvae.inference.ais.ais_estimate`),
    ``method="bdmc"`` sandwiches log p(x) of ``bdmc_images`` simulated images
    (:func:`pvae.inference.ais.bdmc`, rows in ``bdmc.csv``). ``seed`` seeds the draws of z, so that
    evaluating a run twice gives the same numbers (on the same device and chunk size); the
    caller's random state is left as it was. The draws of log p(x) are seeded per block of images
    from the block's first image (:mod:`pvae.runs.sharding`), so that under ``torchrun`` (the
    blocks dealt to the processes, the results gathered on rank 0, which alone writes) the numbers
    are those of one process whatever their number. A ``checkpoint`` other than the run's default
    writes its numbers to ``evaluation-checkpoint-EPOCH.json`` (and ``per_image-...csv``,
    ``bdmc-...csv``), leaving the run's own evaluation as it was.

    :returns: the evaluation, as written to the JSON (:class:`Evaluation`).
    :raises ValueError: for settings that do not fit, in one line, before anything is written.
    """
    settings = EvaluationSettings(
        checkpoint=checkpoint, split=split, num_images=num_images, elbo_samples=elbo_samples,  # type: ignore[arg-type]
        num_samples=num_samples, method=method, num_steps=num_steps, num_leapfrog=num_leapfrog,  # type: ignore[arg-type]
        num_chains=num_chains, bdmc_images=bdmc_images, chunk_size=chunk_size, data_dir=data_dir,
        device=device, seed=seed, progress=progress)  # type: ignore[arg-type]
    return evaluate_with(run_dir, settings)


def evaluate_with(run_dir: str | Path, settings: EvaluationSettings) -> Evaluation:
    """:func:`evaluate_run` with its settings as one object (what ``pvae evaluate`` passes).

    :returns: the evaluation, also written to ``<run_dir>/evaluation.json`` (by rank 0 only under
        ``torchrun``).
    """
    run_dir = Path(run_dir)
    world = current_world(settings.device)  # under torchrun, the processes that share the estimate's images
    dev = world.device(resolve_device(settings.device))
    checkpoint, (evaluation_file, per_image_file, bdmc_file) = _output_files(run_dir, settings.checkpoint)
    # Seeded: the same run evaluated twice gives the same numbers. The model's rebuild and the draws
    # of z use the global generators; forked_rng gives them back to the caller as they were.
    with forked_rng(dev):
        torch.manual_seed(settings.seed)
        run = open_run(run_dir, device=dev, data_dir=settings.data_dir, checkpoint=checkpoint)
        model, x, labels = run.model, *_evaluation_images(run, settings)
        mode = label_mode(model)
        # A class-conditional model is given each image's label; M2 sums its latent label out.
        args = (labels,) if mode == "observed" else ()
        structure = model_structure(model, x=x[:2], y=labels[:2] if mode == "observed" else None)
        check_data_support(model, x, *args)
        fields = _elbo_phase(run, model, x, args, settings, checkpoint)
        fields.update(_label_phase(model, x, labels, structure))
        show = (sys.stderr.isatty() if settings.progress is None else settings.progress)
        if settings.method == "ais":
            fields.update(_ais_evaluation(model, x, labels, args, fields.pop("_elbo"), per_image_file,
                                          settings=settings.ais(), progress=show and world.main, seed=settings.seed,
                                          world=world))
        elif settings.method == "bdmc":
            fields.pop("_elbo")
            # one stream of simulated images and chains: on rank 0, which gives its numbers to the others
            fields.update(world.on_main(lambda: _bdmc_evaluation(
                model, x, labels, mode, bdmc_file, num_images=settings.bdmc_images, settings=settings.ais(),
                progress=show)))
        elif settings.num_samples is not None:
            # With a discrete latent summed out, the importance sampler's own bound from the same draws
            # is tighter than the ELBO (it sums y exactly): the gap to the ELBO is taken from elbo_terms.
            elbo = fields.pop("_elbo")
            fields.update(_log_px_evaluation(model, x, labels, args, settings.num_samples, settings.chunk_size,
                                             per_image_file, elbo=elbo if structure.discrete else None,
                                             progress=show and world.main, seed=settings.seed, world=world))
        else:
            fields.pop("_elbo")
        fields.update(_bits_per_dim(x, structure, fields, dequantized=run.config.dequantize))
        fields["method"] = settings.method if settings.method != "is" or settings.num_samples is not None else None
    # the files of this evaluation, in the run folder
    fields["files"] = [evaluation_file.name] + ([bdmc_file.name] if settings.method == "bdmc" else [per_image_file.name]
                                                if fields["method"] is not None else [])
    evaluation = Evaluation(**fields)
    if world.main:
        atomic_write_text(evaluation_file, evaluation.to_json())
    return evaluation


def _output_files(run_dir: Path, checkpoint: str | None) -> tuple[str, tuple[Path, Path, Path]]:
    """The checkpoint to evaluate and the evaluation's files: the run's own ones describe its default
    checkpoint; another checkpoint's go beside them, named after it."""
    default = default_checkpoint(run_dir)
    checkpoint = default if checkpoint is None else checkpoint
    suffix = "" if checkpoint == default else "-" + Path(checkpoint).stem
    files = tuple(run_dir / f"{Path(name).stem}{suffix}{Path(name).suffix}" for name in (EVALUATION, PER_IMAGE, BDMC_CSV))
    return checkpoint, files  # type: ignore[return-value]


def _evaluation_images(run: Any, settings: EvaluationSettings) -> tuple[Tensor, Tensor]:
    """The split's images, binarized (or dequantized) once with the fixed seed, and their labels."""
    config, data, split = run.config, run.data, settings.split
    x = fixed_eval_set(data.test if split == "test" else data.val, config.binarization, config.dequantize)
    labels = data.test_labels if split == "test" else data.val_labels
    if len(x) == 0:
        raise ValueError(f"the {split} split of this run is empty (val_size=0); evaluate on split='test'")
    if settings.num_images is not None:
        if not 1 <= settings.num_images <= len(x):
            raise ValueError(f"expected num_images=N in [1, {len(x)}] for the {split} split, got "
                             f"num_images={settings.num_images}")
        x, labels = x[: settings.num_images], labels[: settings.num_images]
    return x, labels


def _elbo_phase(run: Any, model: GraphicalModel, x: Tensor, args: tuple[Tensor, ...], settings: EvaluationSettings,
                checkpoint: str) -> dict[str, Any]:
    """The ELBO and its terms per latent site, with what the images and the run were; ``_elbo`` holds
    the per-image ELBO ``(N,)`` for the log p(x) phase."""
    config = run.config
    tic = time.perf_counter()
    terms = elbo_terms(model, x, *args, num_samples=settings.elbo_samples)
    return {
        "split": settings.split,
        "dataset": config.dataset,
        "model": config.model,
        "binarization": config.binarization,
        "dequantized": config.dequantize,
        # the evaluation images are one fixed Bernoulli draw, the same for every run
        "eval_binarization_seed": (EVAL_BINARIZATION_SEED if config.binarization != "none" or config.dequantize
                                   else None),
        "num_images": len(x),
        "elbo": terms.elbo.mean().item(),
        "elbo_stderr": (terms.elbo.std() / math.sqrt(len(x))).item() if len(x) > 1 else 0.0,
        "reconstruction": terms.reconstruction.mean().item(),
        "kl": terms.kl.mean().item(),
        "kl_analytic": terms.kl_is_analytic,
        "kl_by_site": {name: kl.mean().item() for name, kl in terms.kl_by_site.items()},
        "kl_analytic_by_site": terms.analytic_by_site,
        "conditioned_on_label": label_mode(model) == "observed",
        "elbo_samples": settings.elbo_samples,
        "seed": settings.seed,
        "checkpoint": checkpoint,
        "epoch": int(run.state["epoch"]),
        "seconds": time.perf_counter() - tic,
        "_elbo": terms.elbo,
    }


def _label_phase(model: GraphicalModel, x: Tensor, labels: Tensor, structure: ModelStructure) -> dict[str, Any]:
    """A semi-supervised model's label site and how often argmax q(y|x) misses the label."""
    if structure.label is None:
        return {}
    # M2's label is a latent of the test images: every number of the ELBO sums it out exactly.
    predicted = classify(model, x, structure.label)
    return {"label_site": structure.label, "discrete_latents": "summed exactly (enumerated)",
            "classification_error": (predicted != labels).double().mean().item()}


def _log_px_evaluation(
    model: GraphicalModel, x: Tensor, labels: Tensor, args: tuple[Tensor, ...], num_samples: int, chunk_size: int,
    csv_path: Path, *, elbo: Tensor | None = None, progress: bool = False, seed: int = 0, world: World = SINGLE,
) -> dict[str, Any]:
    """log p(x) (log p(x | y) given labels) by importance sampling, its diagnostics, and the
    per-image table at ``csv_path``.

    :param elbo: the per-image ELBO ``(N,)`` to take the gap to; ``None``: the ELBO from the
        sampler's own draws (which is the ELBO only when no discrete latent is summed out).
    """
    tic = time.perf_counter()
    # The data's support was checked above; Pyro's validation would re-check every chunk's decoder
    # output, a full extra pass over the largest tensor, and find nothing new.
    from tqdm.auto import tqdm  # only a long estimate needs it

    bar = tqdm(total=len(x), desc=f"log p(x), K={num_samples}", unit="image", disable=not progress, leave=False)
    with pyro.validation_enabled(False), bar:
        # blocks of the sampler's own chunk (chunk_size // K images), each seeded from its first image
        est = by_blocks(lambda xb, ab: importance_estimate(model.model, model.guide, xb, *ab, num_samples=num_samples,
                                                           chunk_size=chunk_size, pareto_k=True, progress=bar.update),
                        x, args, block=max(1, chunk_size // num_samples), seed=seed, world=world)
    seconds = time.perf_counter() - tic
    assert est.pareto_k is not None
    bound = est.elbo if elbo is None else elbo.to(est.log_px)
    gap, n = est.log_px - bound, len(x)
    rows = zip(range(n), labels.tolist(), bound.tolist(), est.log_px.tolist(), gap.tolist(), est.ess.tolist(),
               est.pareto_k.tolist())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PER_IMAGE_FIELDS)
    writer.writerows([i, label, *(f"{v:.6f}" for v in values)] for i, label, *values in rows)
    if world.main:
        atomic_write_text(csv_path, buf.getvalue())
    by_site = active_units_by_site(model, x, *args) if n > 1 else {}
    return {
        "log_px": est.log_px_mean,
        "log_px_stderr": est.log_px_stderr,
        "num_samples": num_samples,
        "elbo_is": bound.mean().item(),
        "elbo_is_from": "the same draws" if elbo is None else "elbo_terms (a discrete latent is summed out)",
        "kl_gap": gap.mean().item(),
        "kl_gap_stderr": (gap.std() / math.sqrt(n)).item() if n > 1 else 0.0,
        "ess_mean": est.ess.mean().item(),
        "pareto_k_mean": est.pareto_k.mean().item(),
        "pareto_k_above_0_7": (est.pareto_k > 0.7).double().mean().item(),
        "active_units": sum(by_site.values()) if by_site else None,
        "active_units_by_site": by_site,
        "log_px_seconds": seconds,
    }


def _per_image_csv(path: Path, columns: dict[str, list[Any]]) -> None:
    """Write equal-length columns as CSV, floats with six decimals."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in zip(*columns.values()):
        writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])
    atomic_write_text(path, buf.getvalue())


def _ais_evaluation(
    model: GraphicalModel, x: Tensor, labels: Tensor, args: tuple[Tensor, ...], elbo: Tensor, csv_path: Path, *,
    settings: AISSettings, progress: bool, seed: int = 0, world: World = SINGLE,
) -> dict[str, Any]:
    """log p(x) of every image by AIS from the guide, its gap to the ELBO, and the per-image table."""
    from tqdm.auto import tqdm

    from pvae.inference.ais import ais_estimate

    bar = tqdm(total=len(x), desc=f"log p(x), AIS T={settings.num_steps}", unit="image", disable=not progress,
               leave=False)
    with bar:
        est = by_blocks(lambda xb, ab: ais_estimate(model.model, model.guide, xb, *ab, settings=settings,
                                                    progress=bar.update),
                        x, args, block=max(1, min(AIS_BLOCK_IMAGES, settings.chunk_size // settings.num_chains)),
                        seed=seed, world=world)
    gap, n = est.log_px - elbo.to(est.log_px), len(x)
    if world.main:
        _per_image_csv(csv_path, {"index": list(range(n)), "label": labels.tolist(), "elbo": elbo.tolist(),
                                  "log_px": est.log_px.tolist(), "kl_gap": gap.tolist(),
                                  "acceptance_rate": est.acceptance_rate.tolist(),
                                  "step_size": est.step_size.tolist()})
    by_site = active_units_by_site(model, x, *args) if n > 1 else {}
    return {
        **est.summary(),
        "kl_gap": gap.mean().item(),
        "kl_gap_stderr": (gap.std() / math.sqrt(n)).item() if n > 1 else 0.0,
        "active_units": sum(by_site.values()) if by_site else None,
        "active_units_by_site": by_site,
    }


def _bdmc_evaluation(
    model: GraphicalModel, x: Tensor, labels: Tensor, mode: str, csv_path: Path, *, num_images: int,
    settings: AISSettings, progress: bool,
) -> dict[str, Any]:
    """Forward and reverse AIS on images simulated from the model: the sandwich of their log p(x).
    A class-conditional model simulates images of the split's first labels."""
    from tqdm.auto import tqdm

    from pvae.inference.ais import bdmc, simulate_data

    if mode == "observed" and num_images > len(labels):
        raise ValueError(f"bdmc_images={num_images} needs as many labels to condition on; the split has "
                         f"{len(labels)}")
    args = (labels[:num_images],) if mode == "observed" else ()
    data = simulate_data(model.model, x.new_zeros((num_images, x.shape[1])), *args)
    bar = tqdm(total=2 * num_images, desc=f"BDMC, T={settings.num_steps}", unit="image", disable=not progress,
               leave=False)
    with bar:
        result = bdmc(model.model, model.guide, data, *args, settings=settings, progress=bar.update)
    _per_image_csv(csv_path, {"index": list(range(num_images)), "lower": result.lower.tolist(),
                              "upper": result.upper.tolist(), "gap": result.gap.tolist()})
    return result.summary()


def bits_per_dim(nats: float, num_dims: int, *, dequantized: bool = False) -> float:
    """A negative log-likelihood per image, in nats, as bits per dimension (lower is better).

    For a probability of discrete data (binary pixels, or a discretized likelihood of 8-bit levels)
    this is ``nats / (num_dims ln 2)``. For a density of dequantized 8-bit levels (values in (0, 1),
    :func:`pvae.data.transforms.dequantize`) the density is first turned into one of the levels 0..255 by adding
    ``num_dims ln 256``: bits per dimension are then comparable with the literature's (e.g. 8 for a
    uniform density), and bound the 8-bit data's own from above.

    :param nats: ``-log p(x)`` or ``-ELBO`` per image, in nats.
    :param num_dims: D, pixels per image (784 for MNIST).

    >>> round(bits_per_dim(0.0, 784, dequantized=True), 12)  # the uniform density on [0, 1]^D
    8.0
    >>> round(bits_per_dim(784 * math.log(2), 784), 12)
    1.0
    """
    offset = num_dims * math.log(256) if dequantized else 0.0
    return (nats + offset) / (num_dims * math.log(2))


def _bits_per_dim(x: Tensor, structure: ModelStructure, fields: dict[str, Any], *, dequantized: bool) -> dict[str, Any]:
    """``neg_elbo_bits_per_dim`` (and ``nll_bits_per_dim`` with log p(x)) where the run's numbers are
    likelihoods of its images: a probability of discrete pixels, or a density of dequantized ones.
    A density of grey levels that were not dequantized is no likelihood of the 8-bit data (it can
    grow without bound on them): nothing is added then."""
    discrete = structure.image in structure.model.discrete_support
    if not (discrete or dequantized):
        return {}
    dims = int(x[0].numel())
    out = {"neg_elbo_bits_per_dim": bits_per_dim(-fields["elbo"], dims, dequantized=dequantized and not discrete)}
    if "log_px" in fields:
        out["nll_bits_per_dim"] = bits_per_dim(-fields["log_px"], dims, dequantized=dequantized and not discrete)
    return out


def format_table(evaluation: Evaluation) -> str:
    """A plain-text table of an evaluation, in nats per image."""
    ev = evaluation
    given = " | y" if ev.conditioned_on_label else ""
    rows = [
        ("ELBO (higher is better)", f"{ev.elbo:.3f} ± {ev.elbo_stderr:.3f}"),
        (f"  E_q[log p(x{given} | latents)]", f"{ev.reconstruction:.3f}"),
    ]
    analytic = ev.kl_analytic_by_site or {}
    for name, kl in (ev.kl_by_site or {"z": ev.kl}).items():
        how = "closed form" if analytic.get(name, ev.kl_analytic) else "Monte Carlo"
        rows.append((f"  KL term of {name} ({how})", f"{kl:.3f}"))
    if ev.classification_error is not None:
        rows.append(("classification error of q(y|x)", f"{100 * ev.classification_error:.2f}%"))
    if ev.method == "ais":
        acc = ev.ais_acceptance_rate_mean
        rows += [
            (f"log p(x{given}), AIS, T={ev.ais_num_steps}, L={ev.ais_num_leapfrog}, C={ev.ais_num_chains}",
             f"{ev.log_px:.3f} ± {ev.log_px_stderr:.3f}"),
            ("  KL(q(z|x) || p(z|x)) = log p(x) - ELBO", f"{ev.kl_gap:.3f} ± {ev.kl_gap_stderr:.3f}"),
            ("  HMC acceptance rate (mean)", "n/a (T = 1)" if acc is None else f"{acc:.2f}"),
            ("seconds for log p(x)", f"{ev.log_px_seconds:.1f}"),
        ]
    elif ev.method == "bdmc":
        assert ev.bdmc_forward_seconds is not None and ev.bdmc_reverse_seconds is not None
        rows += [
            (f"BDMC on {ev.bdmc_num_images} simulated images, T={ev.ais_num_steps}", ""),
            ("  lower bound (forward AIS)", f"{ev.bdmc_lower:.3f} ± {ev.bdmc_lower_stderr:.3f}"),
            ("  upper bound (reverse AIS)", f"{ev.bdmc_upper:.3f} ± {ev.bdmc_upper_stderr:.3f}"),
            ("  gap = upper - lower", f"{ev.bdmc_gap:.3f} ± {ev.bdmc_gap_stderr:.3f}"),
            ("seconds (forward + reverse)", f"{ev.bdmc_forward_seconds + ev.bdmc_reverse_seconds:.1f}"),
        ]
    elif ev.log_px is not None:
        k = ev.num_samples
        rows += [
            (f"log p(x{given}), importance sampling, K={k}", f"{ev.log_px:.3f} ± {ev.log_px_stderr:.3f}"),
            (f"  ELBO from the same {k} draws" if (ev.elbo_is_from or "the same draws") == "the same draws"
             else "  ELBO (as above)", f"{ev.elbo_is:.3f}"),
            ("  KL(q(z|x) || p(z|x)) = log p(x) - ELBO", f"{ev.kl_gap:.3f} ± {ev.kl_gap_stderr:.3f}"),
            ("  effective sample size (mean)", f"{ev.ess_mean:.1f} of {k}"),
            ("  Pareto k-hat (mean; share > 0.7)", f"{ev.pareto_k_mean:.2f}; {ev.pareto_k_above_0_7:.1%}"),
            ("active units (Cov_x E_q[u] > 0.01)",
             ", ".join(f"{n}: {c}" for n, c in (ev.active_units_by_site or {}).items()) or "n/a"),
            ("seconds for log p(x)", f"{ev.log_px_seconds:.1f}"),
        ]
    bits = [(f"{label} in bits per dimension (lower is better)", f"{value:.4f}")
            for value, label in ((ev.neg_elbo_bits_per_dim, "-ELBO"), (ev.nll_bits_per_dim, "-log p(x)"))
            if value is not None]
    seed = ev.eval_binarization_seed
    if ev.dequantized:
        pixels = f"dequantized once (seed {seed})"
    else:
        pixels = "grey levels" if seed is None else f"binarized once (seed {seed})"
    head = f"{ev.dataset} {ev.split} set, {ev.num_images} images, {pixels}"
    width = max(len(r[0]) for r in rows + bits)
    lines = [head, "nats per image:"] + [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines + [f"  {k:<{width}}  {v}" for k, v in bits])
