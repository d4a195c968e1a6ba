"""One gradient attack (FGM and PGD) for every budget mode and norm.

FGM and PGD are evaluated with three kinds of budget: one ε for the joint
norm of several modalities, one ε for a single modality, and one ε per
modality. All three are "a list of balls, each over some modalities"
(:mod:`.balls`): take the steepest-ascent step within each ball (the
jointly normalised gradient for L2, its sign for L∞), project onto each
ball, clamp. :class:`L2GradientAttack` is that single attack loop; :mod:`.fgm`
and :mod:`.pgd` only choose the balls and the step schedule. (The class keeps
its historical name; ``norm='Linf'`` gives the L∞ attack.)
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .ball_attack import (EPS_UNITS, BallAttack, Geometry, as_names,
                          joint_label, per_modality_budgets)
from .balls import GRAD_NORM_GUARD, L2Ball, LinfBall
from .base import ForwardFn, check_nonneg, check_positive_int, per_sample

__all__ = ['L2GradientAttack', 'L2Ball', 'LinfBall', 'GRAD_NORM_GUARD',
           'EPS_UNITS', 'joint_label', 'per_modality_budgets', 'as_names']


class L2GradientAttack(BallAttack):
    """Untargeted gradient attack on CE(forward(x + δ), y): FGM and PGD.

    ``steps`` steps of steepest ascent (L2: the gradient normalised jointly
    within each ball; L∞: its sign), each followed by the projection onto
    every budget ball and clamping to the valid input range.

    FGM is the special case ``steps=1, step_size=eps`` (one step onto the
    sphere, or the cube's surface for L∞, so the projection is a no-op). Use
    the named subclasses (:class:`~.fgm.MultiModalFGM`,
    :class:`~.pgd.UniModalPGD`, ...); this class holds the one
    implementation they share.

    Note:
        * Gradients are taken with ``torch.autograd.grad`` w.r.t. the deltas
          only, inside ``torch.enable_grad()`` (mmengine's evaluation loop
          runs under ``no_grad``); no parameter ``.grad`` is written and the
          model's mode is never touched: run it in eval mode, otherwise
          BatchNorm couples the samples and updates its running statistics.
        * The loss is summed over the batch so each sample's gradient does
          not shrink with the batch size (the direction is the same).
        * Clamping follows the projection: it only shrinks each element's
          deviation, so every ball still holds (for clean inputs inside the
          valid range).
        * ``eps_unit='raw'`` optimises ``u = delta * std`` (a change of
          variables): the budgets, steps and projections are then in raw
          units while the model still receives ``x + u / std``.

    Args:
        balls (Sequence[tuple]): ``(modalities or None, eps, step_size)``
            per budget; ``None`` = every modality of the input (one joint
            ball). A modality may appear in one ball only.
        kind (str): ``'pgd'`` or ``'fgm'``, the name prefix.
        label (str, optional): budget label for the name (``'audio'``,
            ``'joint'``); None lists each ball as ``modality@eps``.
        steps (int): number of ascent steps. Defaults to 1.
        random_start (bool): start from a random point of each ball.
            Defaults to False.
        restarts (int): attack runs per batch; per sample the first run
            that fools the model is kept, else the last. Needs
            ``random_start`` when > 1. Defaults to 1.
        seed (int): seed of the random start; every call re-seeds, so
            ``perturb`` is a pure function of its inputs. Defaults to 0.
        clamp (bool): clamp to each modality's ``InputSpace`` bounds after
            every step. Defaults to True.
        eps_unit (str): ``'normalized'`` (budgets in the model's input
            space, the protocol's unit) or ``'raw'`` (raw units, e.g.
            0..255 pixels; needs ``spaces[m].std``). Defaults to
            ``'normalized'``.
        norm (str): ``'L2'`` or ``'Linf'`` (names get ``_linf``).
            Defaults to ``'L2'``.
        name (str, optional): overrides the default name. Defaults to None.
    """

    def __init__(self, balls: Sequence[Tuple[Optional[Sequence[str]], float,
                                             float]],
                 kind: str, label: Optional[str] = None, steps: int = 1,
                 random_start: bool = False, restarts: int = 1, seed: int = 0,
                 clamp: bool = True, eps_unit: str = 'normalized',
                 norm: str = 'L2', name: Optional[str] = None):
        if kind not in ('pgd', 'fgm'):
            raise ValueError(f"kind must be 'pgd' or 'fgm', got {kind!r}")
        super().__init__([(mods, eps) for mods, eps, _ in balls]
                         if balls else balls, kind=kind, label=label,
                         norm=norm, seed=seed, clamp=clamp,
                         eps_unit=eps_unit, name=name)
        self.steps = check_positive_int(steps, 'steps')
        self.restarts = check_positive_int(restarts, 'restarts')
        if self.restarts > 1 and not random_start:
            raise ValueError(
                f'restarts={restarts} needs random_start=True (without it '
                'every restart is the same attack)')
        self.random_start = bool(random_start)
        self.balls = self._check_steps(balls, self.budgets)

    @staticmethod
    def _check_steps(balls, budgets):
        out = []
        for (modalities, eps), (_, _, step_size) in zip(budgets, balls):
            key = f'[{modalities[0]!r}]' if len(balls) > 1 and modalities \
                else ''
            step_size = check_nonneg(step_size, 'step_size' + key)
            if step_size == 0 and eps > 0:
                raise ValueError(
                    f'step_size{key} must be > 0, got {step_size!r}')
            out.append((modalities, eps, step_size))
        return out

    def ball_step(self, i: int) -> float:
        return self.balls[i][2]

    def with_eps(self, eps) -> 'L2GradientAttack':
        """A copy at budget ``eps``, each step kept as a fraction of ε."""
        new = super().with_eps(eps)
        new.balls = [(mods, e, a * e / old if old > 0 else a)
                     for (mods, e), (_, old, a) in zip(new.budgets,
                                                       self.balls)]
        return new

    def settings(self) -> dict:
        return dict(
            steps=self.steps,
            step_size=[b[2] for b in self.balls]
            if len(self.balls) > 1 else self.balls[0][2],
            random_start=self.random_start, restarts=self.restarts,
            seed=self.seed if self.random_start else None,
            losses=['ce'], targeted=False,
            loss='cross-entropy on fused logits, untargeted')

    # ---- the attack -------------------------------------------------------

    def search(self, forward: ForwardFn, geo: Geometry, y: Tensor,
               index: Tensor) -> Dict[str, Tensor]:
        xs, ys = geo.take(index), y[index]
        best = fooled = None
        for restart in range(self.restarts):
            u = geo.sample(index) if self.random_start else geo.zeros(index)
            for _ in range(self.steps):
                u = self._step(forward, geo, xs, ys, u)
            if best is None:
                best = u
            else:
                # Keep the earlier restart where it already fools.
                best = {m: torch.where(per_sample(fooled, u[m]), best[m],
                                       u[m]) for m in u}
            if restart < self.restarts - 1:
                with torch.no_grad():
                    fooled = forward(geo.inputs(xs, best)).argmax(1) != ys
        return best

    def _step(self, forward, geo: Geometry, xs, ys, u):
        leaves = {m: t.detach().requires_grad_(True) for m, t in u.items()}
        loss = F.cross_entropy(forward(geo.inputs(xs, leaves)), ys,
                               reduction='sum')
        grads = input_grads(loss, leaves)
        step = geo.ascent(grads, None)
        return geo.project(xs, {m: u[m] + step[m] for m in u})


def input_grads(loss: Tensor, leaves: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Gradient of ``loss`` w.r.t. each leaf (zeros where it is unused).

    A model may ignore a modality (dropped features, a frozen branch): its
    gradient is then zero, not an error (``allow_unused``, and no graph at
    all when nothing the loss depends on requires grad).
    """
    grads = (torch.autograd.grad(loss, list(leaves.values()),
                                 allow_unused=True)
             if loss.requires_grad else [None] * len(leaves))
    return {m: torch.zeros_like(u) if g is None else g
            for (m, u), g in zip(leaves.items(), grads)}
