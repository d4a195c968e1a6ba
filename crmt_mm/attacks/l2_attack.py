"""One L2 gradient attack (FGM and PGD) for every budget mode.

The evaluation protocol (``docs/evaluation.md``) runs FGM and PGD-L2 with
three kinds of budget: one ε for the joint norm of several modalities, one ε
for a single modality, and one ε per modality. All three are "a list of L2
balls, each over some modalities": normalise the gradient within each ball,
step, project onto each ball. :class:`L2Ball` is that concept and :class:`L2GradientAttack` the
single attack loop; :mod:`.fgm` and :mod:`.pgd` only choose the balls and
the step schedule.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import (BUDGET_SPACE, ForwardFn, Perturbation, Spaces,
                   check_labels, check_nonneg, check_positive_int,
                   description, format_value, per_sample, require_modalities,
                   space_of, sq_norm, unique)

#: Floor on a gradient norm before dividing by it. A gradient with norm
#: below it (in practice only an exactly zero gradient: a saturated or
#: unused modality) gives a proportionally shorter step instead of 0/0 = NaN.
GRAD_NORM_GUARD = 1e-12

EPS_UNITS = ('normalized', 'raw')


def joint_label(modalities: Optional[Sequence[str]]) -> str:
    """Name label of a joint budget: ``'joint'``, ``'joint[visual+audio]'``."""
    if modalities is None:
        return 'joint'
    names = unique(_as_names(modalities), 'modalities')
    return 'joint[' + '+'.join(names) + ']'


def per_modality_budgets(eps) -> Dict[str, float]:
    """Validate a per-modality budget ``{modality: eps}`` (non-empty dict)."""
    if not isinstance(eps, Mapping) or not eps:
        raise ValueError(
            'per-modality eps must be a non-empty dict {modality: eps}, '
            f'got {eps!r}')
    return dict(eps)


def _as_names(modalities) -> Sequence[str]:
    # A bare string would be iterated character by character.
    if isinstance(modalities, str) or not isinstance(modalities, Sequence):
        raise ValueError(
            f'modalities must be a list of names, got {modalities!r}')
    return modalities


class L2Ball:
    """Per-sample L2 ball over the concatenation of some modalities.

    Holds ``sqrt(sum_m ||delta^(m)||^2) <= eps`` for every sample, each norm
    over all non-batch dims of that modality's tensor (any rank).

    Args:
        modalities (tuple[str]): modalities sharing the budget.
        eps (float): radius, > 0 (a zero budget is dropped by the attack).
        step_size (float): PGD step length (L2, same units as ``eps``).
    """

    def __init__(self, modalities: Tuple[str, ...], eps: float,
                 step_size: float):
        self.modalities = modalities
        self.eps = eps
        self.step_size = step_size

    def norm(self, t: Mapping[str, Tensor]) -> Tensor:
        """Joint per-sample norm ``[B]`` of the ball's modalities in ``t``."""
        return torch.sqrt(sum(sq_norm(t[m]) for m in self.modalities))

    def ascent(self, grads: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """``step_size * g^(m) / sqrt(sum_m' ||g^(m')||^2)`` per modality.

        The joint normalisation is what makes the step follow the steepest
        L2 ascent for the whole ball, rather than giving
        every modality a unit step of its own.
        """
        n = self.norm(grads).clamp_min(GRAD_NORM_GUARD)
        return {m: grads[m] * per_sample(self.step_size / n, grads[m])
                for m in self.modalities}

    def project(self, delta: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Scale each sample's joint delta back onto the ball if outside."""
        n = self.norm(delta)
        # eps / max(n, eps) is 1 inside the ball and never divides by 0.
        factor = self.eps / n.clamp_min(self.eps)
        return {m: delta[m] * per_sample(factor, delta[m])
                for m in self.modalities}

    def sample(self, like: Mapping[str, Tensor],
               generator: torch.Generator) -> Dict[str, Tensor]:
        """Random start: uniform direction, radius ``eps * U(0, 1)``.

        The radius is uniform (as in torchattacks' PGDL2), not uniform in
        volume: in 10^5 dimensions a volume-uniform draw lies on the sphere.
        """
        ref = like[self.modalities[0]]
        z = {m: torch.randn(like[m].shape, generator=generator,
                            device=like[m].device, dtype=like[m].dtype)
             for m in self.modalities}
        radius = self.eps * torch.rand(ref.shape[0], generator=generator,
                                       device=ref.device, dtype=ref.dtype)
        scale = radius / self.norm(z).clamp_min(GRAD_NORM_GUARD)
        return {m: z[m] * per_sample(scale, z[m]) for m in self.modalities}


class L2GradientAttack(Perturbation):
    """Untargeted L2 gradient attack on CE(forward(x + δ), y): FGM and PGD.

    ``steps`` steps of normalised-gradient ascent, each followed by the
    projection onto every budget ball and clamping to the valid input range.

    FGM is the special case ``steps=1, step_size=eps`` (one step onto the
    sphere, so the projection is a no-op). Use the named subclasses
    (:class:`~.fgm.MultiModalFGM`, :class:`~.pgd.UniModalPGD`, ...); this
    class holds the one implementation they share.

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
        name (str, optional): overrides the default name. Defaults to None.
    """

    def __init__(self, balls: Sequence[Tuple[Optional[Sequence[str]], float,
                                             float]],
                 kind: str, label: Optional[str] = None, steps: int = 1,
                 random_start: bool = False, restarts: int = 1, seed: int = 0,
                 clamp: bool = True, eps_unit: str = 'normalized',
                 name: Optional[str] = None):
        super().__init__(name)
        if kind not in ('pgd', 'fgm'):
            raise ValueError(f"kind must be 'pgd' or 'fgm', got {kind!r}")
        if eps_unit not in EPS_UNITS:
            raise ValueError(
                f'eps_unit must be one of {EPS_UNITS}, got {eps_unit!r}')
        self.kind, self.label = kind, label
        self.steps = check_positive_int(steps, 'steps')
        self.restarts = check_positive_int(restarts, 'restarts')
        if self.restarts > 1 and not random_start:
            raise ValueError(
                f'restarts={restarts} needs random_start=True (without it '
                'every restart is the same attack)')
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'seed must be an int, got {seed!r}')
        self.random_start, self.seed = bool(random_start), seed
        self.clamp, self.eps_unit = bool(clamp), eps_unit
        self.balls = self._check_balls(balls)

    @staticmethod
    def _check_balls(balls):
        if not balls:
            raise ValueError('an L2 attack needs at least one budget')
        out, seen = [], []
        for modalities, eps, step_size in balls:
            if modalities is not None:
                modalities = unique(_as_names(modalities), 'modalities')
                if not modalities:
                    raise ValueError('a budget needs at least one modality')
                clash = [m for m in modalities if m in seen]
                if clash:
                    raise ValueError(f'modalities {clash} are in two budgets')
                seen.extend(modalities)
            # Name the modality in messages when there are several budgets.
            key = f'[{modalities[0]!r}]' if len(balls) > 1 and modalities \
                else ''
            eps = check_nonneg(eps, 'eps' + key)
            step_size = check_nonneg(step_size, 'step_size' + key)
            if step_size == 0 and eps > 0:
                raise ValueError(
                    f'step_size{key} must be > 0, got {step_size!r}')
            out.append((modalities, eps, step_size))
        if len(out) > 1 and any(m is None for m, _, _ in out):
            raise ValueError(
                'a budget over all modalities must be the only one')
        return out

    @property
    def modalities(self) -> Optional[Tuple[str, ...]]:
        if self.balls[0][0] is None:
            return None
        return tuple(m for mods, _, _ in self.balls for m in mods)

    @property
    def eps(self):
        """The budget: a float, or ``{modality: eps}`` for several balls."""
        if len(self.balls) == 1:
            return self.balls[0][1]
        return {m: e for mods, e, _ in self.balls for m in mods}

    def default_name(self) -> str:
        unit = '_raw' if self.eps_unit == 'raw' else ''
        if self.label is not None:
            return f'{self.kind}_{self.label}@{format_value(self.eps)}{unit}'
        parts = '+'.join(f'{m}@{format_value(e)}'
                         for mods, e, _ in self.balls for m in mods)
        return f'{self.kind}_{parts}{unit}'

    def describe(self) -> dict:
        """See :meth:`Perturbation.describe`; one ball is a curve point."""
        curve = budget = None
        if self.label is not None:  # one ball: a point on a curve
            unit = '_raw' if self.eps_unit == 'raw' else ''
            curve, budget = f'{self.kind}_{self.label}{unit}', self.eps
        return description(
            self, kind=self.kind, unit=self.eps_unit, label=self.label,
            curve=curve, budget=budget, settings=dict(
                eps=self.eps, eps_unit=self.eps_unit,
                space=BUDGET_SPACE[self.eps_unit], steps=self.steps,
                step_size=[b[2] for b in self.balls]
                if len(self.balls) > 1 else self.balls[0][2],
                random_start=self.random_start, restarts=self.restarts,
                seed=self.seed if self.random_start else None,
                clamp=self.clamp,
                loss='cross-entropy on fused logits, untargeted'))

    # ---- the attack -------------------------------------------------------

    def perturb(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Dict[str, Tensor]:
        check_labels(x, y)
        if self.modalities is not None:
            require_modalities(x, self.modalities, self.name)
        # A zero budget leaves its modalities untouched (and would make the
        # projection 0 / 0): drop it.
        balls = [L2Ball(tuple(mods) if mods is not None else tuple(x), e, a)
                 for mods, e, a in self.balls if e > 0]
        if not balls:
            return dict(x)
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                f'{self.name}: attacks need autograd, which '
                'torch.inference_mode() disables; use torch.no_grad()')

        attacked = [m for b in balls for m in b.modalities]
        clean = {m: x[m].detach() for m in attacked}
        scale = {m: self._unit_scale(m, spaces, clean[m]) for m in attacked}
        space = {m: space_of(spaces, m) if self.clamp else None
                 for m in attacked}
        generator = None
        if self.random_start:
            ref = clean[attacked[0]]
            generator = torch.Generator(device=ref.device)
            generator.manual_seed(self.seed)

        best = fooled = None
        with torch.enable_grad():
            for restart in range(self.restarts):
                delta = self._start(balls, clean, scale, space, generator)
                for _ in range(self.steps):
                    delta = self._step(forward, x, y, balls, clean, delta,
                                       scale, space)
                # Clamp again: x + (clamped - x) can miss the bound by an ulp.
                adv = {m: self._valid(clean[m] + self._to_input(delta[m],
                                                                scale[m]),
                                      space[m]) for m in attacked}
                if best is None:
                    best = adv
                else:
                    # Keep the earlier restart where it already fools.
                    best = {m: torch.where(per_sample(fooled, adv[m]),
                                           best[m], adv[m]) for m in adv}
                if restart < self.restarts - 1:
                    fooled = self._fooled(forward, x, y, best)
        out = dict(x)
        out.update({m: t.detach() for m, t in best.items()})
        return out

    def _unit_scale(self, m: str, spaces: Spaces,
                    ref: Tensor) -> Optional[Tensor]:
        """``std`` for raw budgets (u = delta * std), None for normalised."""
        if self.eps_unit == 'normalized':
            return None
        space = space_of(spaces, m)
        if space is None or space.std is None:
            raise ValueError(
                f"{self.name}: eps_unit='raw' needs spaces[{m!r}] with a std "
                f'to convert raw units, got {space!r}')
        return space.std.to(device=ref.device, dtype=ref.dtype)

    @staticmethod
    def _to_input(u: Tensor, scale: Optional[Tensor]) -> Tensor:
        return u if scale is None else u / scale

    @staticmethod
    def _valid(x: Tensor, space) -> Tensor:
        return x if space is None else space.clamp(x)

    def _clamp(self, clean, delta, scale, space) -> Dict[str, Tensor]:
        """Clamp ``clean + delta`` to the valid range, in budget units."""
        out = {}
        for m, u in delta.items():
            if space[m] is None or not space[m].bounded:
                out[m] = u
                continue
            adv = self._valid(clean[m] + self._to_input(u, scale[m]),
                              space[m])
            diff = adv - clean[m]
            out[m] = diff if scale[m] is None else diff * scale[m]
        return out

    def _start(self, balls, clean, scale, space, generator):
        if not self.random_start:
            return {m: torch.zeros_like(clean[m]) for b in balls
                    for m in b.modalities}
        delta = {}
        for b in balls:
            delta.update(b.sample(clean, generator))
        return self._clamp(clean, delta, scale, space)

    def _step(self, forward, x, y, balls, clean, delta, scale, space):
        leaves = {m: u.detach().requires_grad_(True) for m, u in delta.items()}
        inputs = dict(x)
        inputs.update({m: clean[m] + self._to_input(u, scale[m])
                       for m, u in leaves.items()})
        loss = F.cross_entropy(forward(inputs), y, reduction='sum')
        # A model may ignore a modality (dropped features, a frozen branch):
        # its gradient is then zero, not an error (allow_unused, and no graph
        # at all when nothing the loss depends on requires grad).
        grads = (torch.autograd.grad(loss, list(leaves.values()),
                                     allow_unused=True)
                 if loss.requires_grad else [None] * len(leaves))
        grads = {m: torch.zeros_like(u) if g is None else g
                 for (m, u), g in zip(leaves.items(), grads)}
        new = {}
        for b in balls:
            step = b.ascent(grads)
            new.update(b.project({m: delta[m] + step[m]
                                  for m in b.modalities}))
        return self._clamp(clean, new, scale, space)

    @staticmethod
    def _fooled(forward, x, y, adv) -> Tensor:
        inputs = dict(x)
        inputs.update(adv)
        with torch.no_grad():
            return forward(inputs).argmax(dim=1) != y
