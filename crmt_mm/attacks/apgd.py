"""Auto-PGD over a dict of modalities, L2 or L∞, CE / DLR / targeted DLR.

APGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020, arXiv 2003.01690):
PGD without a step-size parameter. The step starts at 2ε, is halved at
checkpoints when the loss stalls, and the iterate moves with momentum 0.75.
The structure of the loop follows the paper's Algorithm 1; the public
implementations in ``fra31/auto-attack`` and torchattacks were read to
check details (which steps count, when the step restarts from the best
point). Budgets, units and clamps are those of every attack of this package
(:class:`~.ball_attack.BallAttack`).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .ball_attack import BallAttack, Geometry, budget_mode
from .base import ForwardFn, check_positive_int
from .l2_attack import input_grads
from .losses import LOSSES, attack_loss, top_targets

#: Name prefix per loss.
KINDS = {'ce': 'apgd-ce', 'dlr': 'apgd-dlr', 'dlr-targeted': 'apgd-t'}


def checkpoints(steps: int) -> List[int]:
    """APGD's checkpoints ``w_j = ceil(p_j * steps)``, ``j >= 1``.

    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``;
    the checkpoints up to ``steps``, without repeats.

    Example:
        >>> checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, 0.22]
    while p[-1] <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    out = []
    for pj in p[1:]:
        # round() first: 0.22 * 100 is 22.000000000000004 in floats.
        w = math.ceil(round(pj * steps, 9))
        if 1 <= w <= steps and w not in out:
            out.append(w)
    return out


class APGD(BallAttack):
    """Auto-PGD with the CE, DLR or targeted-DLR loss, L2 or L∞.

    Per sample and per run: start from a random point of the ball's
    boundary (or the clean input), then ``steps`` iterations

        z = P(x^k + η^k g(x^k)),
        x^{k+1} = P(x^k + α (z − x^k) + (1 − α)(x^k − x^{k−1}))

    with α = 0.75 (α = 1 at the first step), g the steepest-ascent direction
    of each budget ball (L2: gradient normalised jointly over the ball's
    modalities; L∞: its sign), P the projection onto every ball followed by
    the valid-range clamp, and η^0 = 2ε of each ball. At each checkpoint
    (:func:`checkpoints`) η is halved and the iterate restarts from the best
    point so far, for the samples where (1) fewer than ρ·(w_j − w_{j−1}) of
    the steps since the last checkpoint increased the loss, or (2) η was not
    halved at the last checkpoint and the best loss has not improved since.
    The result per sample is the first misclassified iterate if there is
    one, else the highest-loss iterate.

    ``loss='dlr-targeted'`` runs once per target: the ``n_targets`` classes
    with the highest clean logits other than the label (capped at K − 1),
    ``restarts`` runs each, and success is still misclassification. Runs and
    restarts after the first only attack the samples not yet fooled.

    Note:
        * Gradients are w.r.t. the inputs only (``torch.autograd.grad``
          inside ``enable_grad``); the model's mode, parameters and ``.grad``
          are never touched: the caller puts the model in eval mode.
        * Random starts are drawn for the whole batch and then indexed
          (:mod:`.ball_attack`), so a sample's result never depends on the
          other samples attacked with it.
        * Shapes: every modality ``[B, ...]`` (4-D images, 6-D video,
          5-D spectrograms alike); norms over all non-batch dims.

    Args:
        eps (float | dict): the budget: a float for one ball (uni-modal
            with ``modality``, else joint), or ``{modality: eps}`` for one
            ball per modality. L2: per-sample norm; L∞: per element.
        modality (str, optional): the attacked modality (uni-modal).
            Defaults to None.
        modalities (Sequence[str], optional): modalities of a joint budget;
            None = every modality of the input. Defaults to None.
        norm (str): ``'L2'`` or ``'Linf'``. Defaults to ``'L2'``.
        loss (str): ``'ce'``, ``'dlr'`` or ``'dlr-targeted'``.
            Defaults to ``'ce'``.
        steps (int): iterations per run. Defaults to 100.
        restarts (int): runs per target (random starts); > 1 needs
            ``random_start``. Defaults to 1.
        n_targets (int): targets of ``'dlr-targeted'`` (capped at K − 1 at
            call time). Defaults to 9.
        random_start (bool): start on the ball's boundary at a random
            point; False = start at the clean input. Defaults to True.
        rho (float): the checkpoint condition's fraction ρ, in (0, 1].
            Defaults to 0.75.
        momentum (float): α, in (0, 1]. Defaults to 0.75.
        seed (int): seed of the random starts (re-seeded every call).
            Defaults to 0.
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'`` (e.g. ``eps=8`` with
            ``norm='Linf'`` is 8/255 of a 0..255 pixel range).
            Defaults to ``'normalized'``.
        name (str, optional): overrides e.g. ``'apgd-ce_audio@0.5'``
            (``_linf`` / ``_raw`` appended for L∞ / raw units).
            Defaults to None.

    Example:
        >>> dict(type='APGD', modality='audio', eps=[0.5, 1.0], loss='dlr')
        >>> atk = APGD(eps=8.0, modality='visual', norm='Linf',
        ...            eps_unit='raw')  # 'apgd-ce_visual@8.0_linf_raw'
    """

    def __init__(self, eps: Union[float, Mapping[str, float]],
                 modality: Optional[str] = None,
                 modalities: Optional[Sequence[str]] = None,
                 norm: str = 'L2', loss: str = 'ce', steps: int = 100,
                 restarts: int = 1, n_targets: int = 9,
                 random_start: bool = True, rho: float = 0.75,
                 momentum: float = 0.75, seed: int = 0, clamp: bool = True,
                 eps_unit: str = 'normalized', name: Optional[str] = None):
        if loss not in LOSSES:
            raise ValueError(f'loss must be one of {LOSSES}, got {loss!r}')
        budgets, label = budget_mode(eps, modality, modalities)
        super().__init__(budgets, kind=KINDS[loss], label=label, norm=norm,
                         seed=seed, clamp=clamp, eps_unit=eps_unit,
                         name=name)
        self.loss = loss
        self.steps = check_positive_int(steps, 'steps')
        self.restarts = check_positive_int(restarts, 'restarts')
        self.n_targets = check_positive_int(n_targets, 'n_targets')
        if self.restarts > 1 and not random_start:
            raise ValueError(
                f'restarts={restarts} needs random_start=True (without it '
                'every restart is the same attack)')
        self.random_start = bool(random_start)
        for value, what in ((rho, 'rho'), (momentum, 'momentum')):
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f'{what} must be in (0, 1], got {value!r}')
        self.rho, self.momentum = float(rho), float(momentum)
        self.checkpoints = checkpoints(self.steps)

    def settings(self) -> dict:
        return dict(
            steps=self.steps, restarts=self.restarts, losses=[self.loss],
            targeted=self.loss == 'dlr-targeted',
            n_targets=self.n_targets if self.loss == 'dlr-targeted'
            else None, random_start=self.random_start,
            step_size='2 eps, halved at checkpoints', momentum=self.momentum,
            rho=self.rho, checkpoints=list(self.checkpoints))

    # ---- the attack -------------------------------------------------------

    def search(self, forward: ForwardFn, geo: Geometry, y: Tensor,
               index: Tensor) -> Dict[str, Tensor]:
        xs_all, ys_all = geo.take(index), y[index]
        best = geo.zeros(index)
        fooled = torch.zeros_like(ys_all, dtype=torch.bool)
        targets, runs = None, 1
        if self.loss == 'dlr-targeted':
            with torch.no_grad():
                clean_logits = forward(xs_all)
            num_classes = clean_logits.shape[1]
            if num_classes < 4:
                raise ValueError(
                    f'{self.name}: the targeted DLR loss needs >= 4 classes, '
                    f'the model has {num_classes}')
            runs = min(self.n_targets, num_classes - 1)
            targets = top_targets(clean_logits, ys_all, runs)
        for run in range(runs):
            for _ in range(self.restarts):
                # Drawn for every run, attacked or not, so that the stream
                # of random numbers does not depend on who is still robust.
                start = geo.sample(index, boundary=True) \
                    if self.random_start else geo.zeros(index)
                todo = torch.nonzero(~fooled).flatten()
                if todo.numel() == 0:
                    continue
                xs = {m: t[todo] for m, t in xs_all.items()}
                u, ok = self._run(
                    forward, geo, xs, ys_all[todo],
                    {m: t[todo] for m, t in start.items()},
                    None if targets is None else targets[todo, run])
                for m in best:
                    best[m] = best[m].index_copy(0, todo, u[m])
                fooled = fooled.index_copy(0, todo, ok)
        return best

    def _grad(self, forward, geo, xs, ys, u, target):
        leaves = {m: t.detach().requires_grad_(True) for m, t in u.items()}
        logits = forward(geo.inputs(xs, leaves))
        loss = attack_loss(self.loss, logits, ys, target)
        grads = input_grads(loss.sum(), leaves)
        return grads, loss.detach(), logits.detach()

    def _run(self, forward, geo: Geometry, xs, ys, u, target):
        """One APGD run; returns the chosen ``u`` and the fooled mask."""
        grad, loss, logits = self._grad(forward, geo, xs, ys, u, target)
        fooled = logits.argmax(dim=1) != ys
        adv = dict(u)  # the first misclassified iterate per sample
        best_u, best_grad, best_loss = dict(u), dict(grad), loss
        step = torch.full_like(loss, 2.0)  # η / ε per sample
        u_prev, prev_loss = u, loss
        increases = torch.zeros_like(loss)
        best_at_check = best_loss
        halved_at_check = torch.ones_like(fooled)
        last_check = 0
        for k in range(1, self.steps + 1):
            ascent = geo.ascent(grad, step, relative=True)
            z = geo.project(xs, {m: u[m] + ascent[m] for m in u})
            if k > 1:
                a = self.momentum
                z = geo.project(xs, {m: u[m] + a * (z[m] - u[m]) +
                                     (1 - a) * (u[m] - u_prev[m])
                                     for m in u})
            u_prev, u = u, z
            grad, loss, logits = self._grad(forward, geo, xs, ys, u, target)
            now = logits.argmax(dim=1) != ys
            adv = geo.where(now & ~fooled, u, adv)
            fooled = fooled | now
            increases = increases + (loss > prev_loss).to(loss.dtype)
            prev_loss = loss
            better = loss > best_loss
            best_u = geo.where(better, u, best_u)
            best_grad = geo.where(better, grad, best_grad)
            best_loss = torch.where(better, loss, best_loss)
            if k in self.checkpoints:
                stalled = increases < self.rho * (k - last_check)
                no_gain = ~halved_at_check & (best_loss <= best_at_check)
                halve = stalled | no_gain
                step = torch.where(halve, step / 2, step)
                u = geo.where(halve, best_u, u)
                grad = geo.where(halve, best_grad, grad)
                halved_at_check, best_at_check = halve, best_loss
                increases = torch.zeros_like(increases)
                last_check = k
            if bool(fooled.all()):  # nothing left to find in this run
                break
        return geo.where(fooled, adv, best_u), fooled
