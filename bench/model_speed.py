"""Seconds per training epoch of pvae's other graphical models versus hand-written PyTorch loops.

For each model (``hierarchical``: the two-layer z2 -> z1 -> x of Burda et al. 2016; ``conditional``:
p(z) p(x | z, y) with y observed; ``m2``: the semi-supervised VAE of Kingma et al. 2014), pvae's
``train_epoch`` with the objective ``pvae train`` would use (engine auto: the traced ELBO for the
first two, M2 eagerly with ``TraceEnum_ELBO``) races a loop that computes the same estimator by hand
with copies of the same initialized networks: the same minibatches of the same dynamically binarized
MNIST images, the same data order, optimizer (Adam) and estimator (one reparameterized draw per latent
and image, Monte-Carlo KL, the N/B minibatch scale):

- hierarchical: z1 ~ q(z1|x), z2 ~ q(z2|z1);
  loss = -(N/B) sum_i [log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)].
- conditional: z ~ q(z|x,y); loss = -(N/B) sum_i [log p(x|z,y) + log p(z) - log q(z|x,y)].
- m2: the unlabelled batch expanded over the C classes, one z per class and image,
  -U(x) = sum_y q(y|x) (-L(x,y)) + H(q(y|x)) with the scale N_u/B; plus the labelled ELBO of a
  labelled minibatch (``torch.randperm(N_l, generator=g)[:B]`` as ``SemiSupervisedObjective``
  draws it, from a generator of its own seeded alike) with the scale N_l/B_l, and the
  classification term: alpha = aux_weight * N times that minibatch's mean of log q(y|x).

Before timing, each model's hand-written loss is checked against pvae's eager ELBO on one batch
with the same draws (same seed): the losses and every parameter's gradient must agree to float
rounding. The per-epoch train ELBOs of the two are printed side by side as well.

As in ``bench/train_speed.py`` each epoch is cut into blocks of ``--block-steps`` steps that the two
implementations take in turn (who goes first alternates), so that a slow spell of a shared machine
hits both alike; an epoch's seconds are the sum of its blocks plus the binarization and shuffling
both share (timed once). pvae's first epoch includes recording the trace (as in ``pvae train``).

    PVAE_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/model_speed.py \\
        [--model all] [--repeats 3] [--threads 1] [--train-size 10000] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from collections.abc import Callable

import pyro
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pvae import TrainConfig, load_data
from pvae.data import labelled_subset
from pvae.devices import forked_rng, resolve_device
from pvae.runs.build import build_model
from pvae.runs.train import train_epoch
from pvae.training.objectives import (
    SemiSupervisedObjective,
    build_objective,
    engine_for,
    training_objective,
    wants_enumeration,
)

MODELS = ("hierarchical", "conditional", "m2")
TARGETS = {"hierarchical": 1.10, "conditional": 1.10, "m2": 1.25}
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_prob(value: Tensor, loc: Tensor | float, scale: Tensor | float) -> Tensor:
    """log N(value; loc, diag(scale^2)) summed over the last dimension (torch's formula, unvalidated)."""
    log_scale = scale.log() if isinstance(scale, Tensor) else math.log(scale)
    return (-((value - loc) ** 2) / (2 * scale**2) - log_scale - HALF_LOG_2PI).sum(-1)


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log prod_d Bernoulli(x_d; sigmoid(logits_d)): ``(...)``."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def plate_scale(num_data: int, batch: int) -> float:
    """N / B, or 1 when the batch is the whole set (as ``pvae.models.common.data_plate``)."""
    return num_data / batch if batch < num_data else 1.0


class HandWritten(nn.Module):
    """A model's networks (copies of pvae's, same initial weights) and its loss written out by hand.

    :ivar pairs: (pvae module, its copy here), to compare gradients parameter by parameter.
    :ivar auxiliary: the last loss's part that is not the ELBO (M2's classification term), detached.
    """

    def __init__(self, pairs: list[tuple[nn.Module, nn.Module]], num_data: int) -> None:
        super().__init__()
        self.pairs, self.num_data = pairs, num_data
        self.auxiliary: Tensor | float = 0.0

    def loss(self, x: Tensor, *args: Tensor) -> Tensor:
        raise NotImplementedError


class HandTwoLayer(HandWritten):
    """p(z2) p(z1|z2) p(x|z1), q(z1|x) q(z2|z1); N(0, I) prior, Bernoulli pixels."""

    def __init__(self, model: nn.Module) -> None:
        pairs = [(a, copy.deepcopy(a)) for a in (model.posterior.encoder, model.top_posterior.encoder,
                                                 model.z1_decoder, model.decoder)]
        super().__init__(pairs, model.num_data)
        self.q1, self.q2, self.p1, self.decoder = (b for _, b in pairs)

    def loss(self, x: Tensor) -> Tensor:
        loc1, scale1 = self.q1(x)
        z1 = loc1 + scale1 * torch.randn_like(loc1)
        loc2, scale2 = self.q2(z1)
        z2 = loc2 + scale2 * torch.randn_like(loc2)
        ploc, pscale = self.p1(z2)
        elbo = (bernoulli_log_prob(self.decoder(z1), x) + normal_log_prob(z1, ploc, pscale)
                + normal_log_prob(z2, 0.0, 1.0) - normal_log_prob(z1, loc1, scale1) - normal_log_prob(z2, loc2, scale2))
        return -plate_scale(self.num_data, x.shape[0]) * elbo.sum()


class HandConditional(HandWritten):
    """p(z) p(x | z, y), q(z | x, y); y one-hot into both networks."""

    def __init__(self, model: nn.Module) -> None:
        self.num_classes = model.num_classes
        encoder, decoder = copy.deepcopy(model.posterior.encoder), copy.deepcopy(model.decoder)
        super().__init__([(model.posterior.encoder, encoder), (model.decoder, decoder)], model.num_data)
        self.encoder, self.decoder = encoder, decoder

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        code = F.one_hot(y, self.num_classes).to(x.dtype)
        loc, scale = self.encoder(torch.cat([x, code], -1))
        z = loc + scale * torch.randn_like(loc)
        elbo = (bernoulli_log_prob(self.decoder(torch.cat([z, code], -1)), x) + normal_log_prob(z, 0.0, 1.0)
                - normal_log_prob(z, loc, scale))
        return -plate_scale(self.num_data, x.shape[0]) * elbo.sum()


class HandM2(HandWritten):
    """M2's loss as ``SemiSupervisedObjective`` computes it, the sum over classes written out."""

    def __init__(self, model: nn.Module, x_labelled: Tensor, y_labelled: Tensor, generator: torch.Generator) -> None:
        c = model.num_classes
        classifier, encoder = copy.deepcopy(model.classifier), copy.deepcopy(model.posterior.encoder)
        decoder = copy.deepcopy(model.decoder)
        super().__init__([(model.classifier, classifier), (model.posterior.encoder, encoder),
                          (model.decoder, decoder)], model.num_data)
        self.classifier, self.encoder, self.decoder = classifier, encoder, decoder
        self.num_classes, self.num_labelled, self.aux_weight = c, model.num_labelled, model.aux_weight
        self.x_labelled, self.y_labelled, self.generator = x_labelled, y_labelled, generator
        self.log_py = -math.log(c)  # p(y) uniform
        self.register_buffer("codes", torch.eye(c, device=x_labelled.device))

    def _labelled_elbo(self, x: Tensor, code: Tensor) -> Tensor:
        """-L(x, y) per image (and class): one z ~ q(z|x,y) each. :param code: one-hot y, broadcast to x."""
        loc, scale = self.encoder(torch.cat([x, code], -1))
        z = loc + scale * torch.randn_like(loc)
        return (bernoulli_log_prob(self.decoder(torch.cat([z, code], -1)), x) + self.log_py
                + normal_log_prob(z, 0.0, 1.0) - normal_log_prob(z, loc, scale))

    def loss(self, x: Tensor) -> Tensor:
        n_l, b, c = self.num_labelled, x.shape[0], self.num_classes
        rows = torch.randperm(n_l, generator=self.generator, device=self.x_labelled.device)[:b]
        xl, yl = self.x_labelled[rows], self.y_labelled[rows]
        scale_l = plate_scale(n_l, xl.shape[0])
        # alpha * log q(y|x) on the labelled minibatch, alpha = aux_weight * N (Kingma et al. 2014, eq. 9)
        log_qyl = F.log_softmax(self.classifier(xl), -1).gather(-1, yl[:, None]).squeeze(-1)
        aux = -scale_l * (self.aux_weight * self.num_data / n_l) * log_qyl.sum()
        # unlabelled: every class at once, (C, B); -U = sum_y q(y|x) (L(x, y) - log q(y|x))
        log_qy = F.log_softmax(self.classifier(x), -1).T  # (C, B)
        codes = self.codes[:, None, :].expand(c, b, c)
        elbo_xy = self._labelled_elbo(x.expand(c, *x.shape), codes)  # (C, B)
        unlabelled = (log_qy.exp() * (elbo_xy - log_qy)).sum()
        labelled = self._labelled_elbo(xl, F.one_hot(yl, c).to(xl.dtype)).sum()
        self.auxiliary = aux.detach()
        return -plate_scale(self.num_data - n_l, b) * unlabelled - scale_l * labelled + aux


def hand_epoch(hand: HandWritten, optimizer: torch.optim.Optimizer, x: Tensor, order: Tensor, batch: int,
               y: Tensor | None = None) -> float:
    """Adam steps on the minibatches ``x[order[i : i + batch]]``, as pvae's train_epoch takes them.

    :returns: the mean over steps of the per-image ELBO estimate (without M2's classification term).
    """
    elbo_sum = torch.zeros((), device=x.device)
    steps = 0
    for start in range(0, order.shape[0], batch):
        rows = order[start : start + batch]
        loss = hand.loss(x[rows]) if y is None else hand.loss(x[rows], y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elbo_sum -= (loss.detach() - hand.auxiliary) / max(hand.num_data, rows.shape[0])
        steps += 1
    return elbo_sum.item() / steps


def check_same_loss(kind: str, model: nn.Module, hand: HandWritten, config: TrainConfig, x: Tensor,
                    args: tuple[Tensor, ...], labelled: tuple[Tensor, Tensor] | None, device: torch.device) -> bool:
    """One batch, the same seed: pvae's eager ELBO and the hand-written loss, values and gradients."""
    with forked_rng(device):
        if labelled is not None:
            eager = SemiSupervisedObjective(build_objective(config.objective, enumerates=True), *labelled,
                                            torch.Generator(device=device).manual_seed(7))
            hand.generator = torch.Generator(device=device).manual_seed(7)
        else:
            eager = build_objective(config.objective, enumerates=False)
        torch.manual_seed(1234)
        with pyro.validation_enabled(False):
            pvae_loss = eager.differentiable_loss(model.model, model.guide, x, *args)
        torch.manual_seed(1234)
        hand_loss = hand.loss(x, *args)
    grads_pvae = torch.autograd.grad(pvae_loss, [p for a, _ in hand.pairs for p in a.parameters()])
    grads_hand = torch.autograd.grad(hand_loss, [p for _, b in hand.pairs for p in b.parameters()])
    loss_rel = abs(pvae_loss.item() - hand_loss.item()) / abs(pvae_loss.item())
    grad_rel = max(((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item() for a, b in zip(grads_pvae, grads_hand))
    ok = loss_rel < 1e-5 and grad_rel < 1e-3
    print(f"check {kind:<12}  one batch of {x.shape[0]}, same draws: loss pvae {pvae_loss.item():.6g}, hand-written "
          f"{hand_loss.item():.6g} (rel. diff {loss_rel:.1e}); gradients max rel. diff {grad_rel:.1e}  "
          f"{'ok' if ok else 'MISMATCH'}")
    return ok


def bench_model(kind: str, args: argparse.Namespace, data, device: torch.device) -> dict:  # noqa: ANN001
    """Time ``args.repeats`` epochs of pvae and of the hand-written loop for one model family."""
    extra = {"labels": args.labels, "label_seed": args.label_seed} if kind == "m2" else {}
    config = TrainConfig(model=kind, batch_size=args.batch_size, val_size=args.val_size, train_size=args.train_size,
                         device=str(device), **extra)
    x_grey, n = data.train, data.train.shape[0]
    labels = data.train_labels
    torch.manual_seed(0)
    model = build_model(config, data.x_dim, n, mean_image=x_grey.mean(0)).to(device)
    gen = torch.Generator(device=device).manual_seed(0)  # data order and binarization, shared
    x0 = torch.bernoulli(x_grey, generator=torch.Generator(device=device).manual_seed(1))
    fit = torch.arange(n, device=device)
    y_train = labels if kind == "conditional" else None
    probe = (labels[:2],) if kind == "conditional" else ()
    enum = wants_enumeration(model, x0[:2], *probe)
    labelled_pair = None
    if kind == "m2":
        chosen = labelled_subset(labels, config.labels, config.label_seed)
        is_labelled = torch.zeros(n, dtype=torch.bool, device=device)
        is_labelled[chosen] = True
        fit = (~is_labelled).nonzero().squeeze(-1)
        model.num_labelled = config.labels
        labelled_pair = (x0[chosen], labels[chosen])
        # each has a labelled-minibatch stream of its own, seeded alike: the same draws step by step
        objective = training_objective(model, objective=config.objective, engine="eager", enumerates=enum,
                                       labelled=(*labelled_pair, torch.Generator(device=device).manual_seed(2)))
        hand: HandWritten = HandM2(model, *labelled_pair, torch.Generator(device=device).manual_seed(2)).to(device)
        engine = f"eager {type(objective.elbo).__name__}"
    else:
        engine = engine_for(config.engine, own_model=False, enumerates=enum)
        objective = training_objective(model, objective=config.objective, engine=engine, enumerates=enum)
        hand = (HandTwoLayer(model) if kind == "hierarchical" else HandConditional(model)).to(device)
        engine = f"{engine} {type(objective).__name__}" + (f"({type(objective.objective).__name__})"
                                                         if hasattr(objective, "objective") else "")

    b = config.batch_size
    rows = fit[:b]
    ok = check_same_loss(kind, model, hand, config, x0[rows], (labels[rows],) if kind == "conditional" else (),
                         labelled_pair, device)
    if kind == "m2":
        hand.generator = torch.Generator(device=device).manual_seed(2)  # the check drew from a stream of its own

    opt_pvae = torch.optim.Adam(model.parameters(), lr=config.lr)
    opt_hand = torch.optim.Adam(hand.parameters(), lr=config.lr)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(run: Callable[[], None]) -> float:
        sync()
        tic = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - tic

    block = args.block_steps * b
    names = ("pvae", "hand")
    times: dict[str, list[float]] = {name: [] for name in names}
    epoch_elbos: dict[str, list[float]] = {name: [] for name in names}
    model.train()
    for rep in range(args.repeats):
        order, x = fit, x0

        def prepare() -> None:
            nonlocal order, x
            order = fit[torch.randperm(fit.shape[0], generator=gen, device=device)]
            x = torch.bernoulli(x_grey, generator=gen)  # dynamic binarization, as pvae train does

        shared = timed(prepare)
        if kind == "m2":  # this epoch's binarization of the labelled images, for both
            objective.x_labelled = hand.x_labelled = x[chosen]
        seconds = dict.fromkeys(names, shared)
        elbos: dict[str, list[float]] = {name: [] for name in names}
        for i, lo in enumerate(range(0, order.shape[0], block)):
            # Both see the same minibatches: the block's images (and labels), gathered outside the timing.
            sel = order[lo : lo + block]
            xb, yb = x[sel], None if y_train is None else y_train[sel]
            steps = torch.arange(xb.shape[0], device=device)
            runs = {
                "pvae": lambda: train_epoch(model, objective, opt_pvae, xb, steps, b, y=yb),
                "hand": lambda: hand_epoch(hand, opt_hand, xb, steps, b, y=yb),
            }
            first = (rep + i) % len(names)
            for name in names[first:] + names[:first]:
                weight = math.ceil(xb.shape[0] / b)  # each returns the block's mean over its steps
                seconds[name] += timed(lambda: elbos[name].append(runs[name]() * weight))  # noqa: B023
        for name in names:
            times[name].append(seconds[name])
            epoch_elbos[name].append(sum(elbos[name]) / math.ceil(order.shape[0] / b))
        print(f"{kind:<12} epoch {rep + 1}  pvae {seconds['pvae']:6.2f} s  hand-written {seconds['hand']:6.2f} s  "
              f"ratio {seconds['pvae'] / seconds['hand']:.3f}   train elbo (nats/image) "
              f"{epoch_elbos['pvae'][-1]:.2f}, {epoch_elbos['hand'][-1]:.2f}", flush=True)
    p, h = statistics.median(times["pvae"]), statistics.median(times["hand"])
    ratio = statistics.median(a / c for a, c in zip(times["pvae"], times["hand"]))
    elbo_p, elbo_h = epoch_elbos["pvae"][-1], epoch_elbos["hand"][-1]
    return {"model": kind, "pvae": p, "hand": h, "ratio": ratio, "engine": engine, "check": ok,
            "elbo_rel": abs(elbo_p - elbo_h) / abs(elbo_h), "n": order.shape[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all", choices=(*MODELS, "all"))
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per implementation")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--data-dir", default=None, help="(default: $PVAE_DATA_DIR, else pvae's cache)")
    parser.add_argument("--val-size", type=int, default=TrainConfig.val_size,
                        help="training images held out, as pvae train does (default: %(default)s)")
    parser.add_argument("--train-size", type=int, default=None, help="train on the first this many (default: all)")
    parser.add_argument("--labels", type=int, default=100, help="m2's labelled images (default: %(default)s)")
    parser.add_argument("--label-seed", type=int, default=TrainConfig.label_seed)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--block-steps", type=int, default=50, help="steps per block; the two take turns block by block")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    data = load_data("mnist", args.data_dir, val_size=args.val_size, train_size=args.train_size, device=device)
    results = [bench_model(kind, args, data, device) for kind in (MODELS if args.model == "all" else (args.model,))]
    print(f"\ndevice {device}, {torch.get_num_threads()} threads, N={data.train.shape[0]}, batch {args.batch_size}, "
          f"{args.repeats} epochs each, blocks of {args.block_steps} steps (medians; m2: {args.labels} labelled)")
    print(f"{'model':<13}{'pvae s/epoch':>13}{'hand s/epoch':>13}{'ratio':>8}{'target':>8}  {'met':<4} "
          f"{'check':<6}{'elbo diff':>10}  engine")
    for r in results:
        target = TARGETS[r["model"]]
        print(f"{r['model']:<13}{r['pvae']:13.3f}{r['hand']:13.3f}{r['ratio']:8.3f}{target:8.2f}  "
              f"{'yes' if r['ratio'] <= target else 'no':<4} {'ok' if r['check'] else 'FAIL':<6}"
              f"{100 * r['elbo_rel']:9.2f}%  {r['engine']}")
    print("ratio: median over epochs of pvae / hand-written; check: loss and gradients equal on one batch; "
          "elbo diff: last epoch's train ELBOs, relative")


if __name__ == "__main__":
    main()
