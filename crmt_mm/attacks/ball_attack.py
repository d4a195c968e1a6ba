"""What every budgeted input attack shares: budgets, units, clamps, outputs.

:class:`BallAttack` holds a list of budgets (each a ball over some
modalities, :mod:`.balls`) in one norm, the budget unit (normalised or raw)
and the clamp; per call it builds a :class:`Geometry` that maps between the
model's inputs and the perturbation being optimised. The concrete attacks
(:mod:`.l2_attack` FGM/PGD, :mod:`.apgd`, :mod:`.square`) only implement
:meth:`BallAttack.search`, the search for a perturbation on a set of samples.

Every attack can be run on a subset of a batch (``active``) through
:meth:`BallAttack.attack`; random draws are always made for the whole batch
and then indexed, so a sample's result depends on the seed, its position in
the batch and its own inputs only, never on which other samples are
attacked. That is what lets the ensemble (:mod:`.autoattack`) attack only
the survivors and still return exactly what attacking everyone would.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .balls import BALLS, check_norm
from .base import (BUDGET_SPACE, ForwardFn, Perturbation, Spaces,
                   check_labels, check_nonneg, description, format_value, norm_suffix,
                   per_sample, require_modalities, space_of, unique)

EPS_UNITS = ('normalized', 'raw')



def as_names(modalities) -> Sequence[str]:
    """``modalities`` if it is a list/tuple of names (not a bare string)."""
    if isinstance(modalities, str) or not isinstance(modalities, Sequence):
        raise ValueError(
            f'modalities must be a list of names, got {modalities!r}')
    return modalities


def joint_label(modalities: Optional[Sequence[str]]) -> str:
    """Name label of a joint budget: ``'joint'``, ``'joint[visual+audio]'``."""
    if modalities is None:
        return 'joint'
    names = unique(as_names(modalities), 'modalities')
    return 'joint[' + '+'.join(names) + ']'


def per_modality_budgets(eps) -> Dict[str, float]:
    """Check a per-modality budget dict ``{modality: eps}``."""
    if not isinstance(eps, Mapping) or not eps:
        raise ValueError(
            'per-modality eps must be a non-empty dict {modality: eps}, '
            f'got {eps!r}')
    return dict(eps)


def budget_mode(eps, modality: Optional[str] = None,
                modalities: Optional[Sequence[str]] = None):
    """Budgets and name label from the three ways of writing a budget.

    * ``eps`` a dict ``{modality: eps}``: one ball per modality (label
      None, the name lists each ``modality@eps``);
    * ``modality='audio'``: one ball over that modality (label ``'audio'``);
    * otherwise one joint ball over ``modalities`` (None = every modality
      of the input; label ``'joint'``).

    Returns:
        tuple[list, str | None]: ``[(modalities or None, eps), ...]`` and
        the label.
    """
    if isinstance(eps, Mapping):
        if modality is not None or modalities is not None:
            raise ValueError('a per-modality eps dict names its modalities; '
                             'do not also set modality/modalities')
        return [((m,), e) for m, e in per_modality_budgets(eps).items()], \
            None
    if modality is not None:
        if modalities is not None:
            raise ValueError('set modality (uni-modal) or modalities '
                             '(joint), not both')
        if not isinstance(modality, str) or not modality:
            raise ValueError(
                f'modality must be a non-empty string, got {modality!r}')
        return [((modality,), eps)], modality
    return [(modalities, eps)], joint_label(modalities)


@dataclass
class AttackOutput:
    """Result of :meth:`BallAttack.attack` on the ``active`` samples.

    Attributes:
        index (Tensor): LongTensor ``[n]``, the attacked samples' positions
            in the batch.
        adv (dict[str, Tensor]): ``{modality: [n, ...]}`` perturbed inputs
            of the attacked modalities only (normalised space, clamped).
        logits (Tensor | None): ``[n, K]`` fused logits at ``adv`` (None
            when not requested).
        fooled (Tensor | None): ``[n]`` bool, ``logits.argmax(1) != y``.
    """

    index: Tensor
    adv: Dict[str, Tensor]
    logits: Optional[Tensor] = None
    fooled: Optional[Tensor] = None


class Geometry:
    """One call's view of the budgets: clean inputs, units, clamps, balls.

    The attacks optimise ``u`` per attacked modality, in budget units:
    ``u = delta`` for normalised budgets, ``u = delta * std`` for raw ones
    (a change of variables, so budgets, steps and projections are in raw
    units while the model receives ``x + u / std``).

    Args:
        balls (list): :class:`~.balls.L2Ball` / ``LinfBall`` objects (eps > 0).
        x (dict[str, Tensor]): the whole batch.
        scale (dict[str, Tensor | None]): ``std`` per modality for raw units.
        space (dict[str, InputSpace | None]): clamp per modality (None =
            never clamped).
        generator (torch.Generator): seeded for this call.
    """

    def __init__(self, balls, x, scale, space, generator):
        self.balls = balls
        self.attacked = tuple(m for b in balls for m in b.modalities)
        self.x = x
        self.clean = {m: x[m].detach() for m in self.attacked}
        self.scale, self.space = scale, space
        self.generator = generator

    @property
    def batch_size(self) -> int:
        return self.clean[self.attacked[0]].shape[0]

    def take(self, index: Tensor) -> Dict[str, Tensor]:
        """Every modality of the batch at ``index`` (``[n, ...]`` each)."""
        if index.numel() == self.batch_size:  # the whole batch: no copy
            return dict(self.x)
        return {m: t[index] for m, t in self.x.items()}

    def zeros(self, index: Tensor) -> Dict[str, Tensor]:
        return {m: torch.zeros_like(self.clean[m][index])
                for m in self.attacked}

    def _to_input(self, m: str, u: Tensor) -> Tensor:
        return u if self.scale[m] is None else u / self.scale[m]

    def inputs(self, xs: Mapping[str, Tensor], u: Mapping[str, Tensor]
               ) -> Dict[str, Tensor]:
        """Model inputs: ``xs`` with each attacked modality at ``clean + u``.
        """
        out = dict(xs)
        out.update({m: xs[m].detach() + self._to_input(m, u[m])
                    for m in self.attacked})
        return out

    def valid(self, xs: Mapping[str, Tensor], u: Mapping[str, Tensor]
              ) -> Dict[str, Tensor]:
        """The attacked modalities at ``clean + u``, clamped (final output).

        Clamped again because ``x + (clamped - x)`` can miss a bound by an
        ulp.
        """
        out = {}
        for m in self.attacked:
            adv = xs[m].detach() + self._to_input(m, u[m])
            out[m] = adv if self.space[m] is None else self.space[m].clamp(adv)
        return out

    def clamp(self, xs: Mapping[str, Tensor], u: Mapping[str, Tensor]
              ) -> Dict[str, Tensor]:
        """Clamp ``clean + u`` to the valid range, in budget units.

        Clamping only shrinks each element's deviation, so every ball that
        held before still holds (for clean inputs inside the valid range).
        """
        out = {}
        for m in self.attacked:
            space = self.space[m]
            if space is None or not space.bounded:
                out[m] = u[m]
                continue
            clean = xs[m].detach()
            diff = space.clamp(clean + self._to_input(m, u[m])) - clean
            out[m] = diff if self.scale[m] is None else diff * self.scale[m]
        return out

    def where(self, mask: Tensor, a: Mapping[str, Tensor],
              b: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Per sample: ``a`` where ``mask`` (``[n]`` bool), else ``b``."""
        return {m: torch.where(per_sample(mask, a[m]), a[m], b[m])
                for m in self.attacked}

    def project(self, xs, u) -> Dict[str, Tensor]:
        """Project onto every ball, then clamp."""
        out = {}
        for b in self.balls:
            out.update(b.project(u))
        return self.clamp(xs, out)

    def ascent(self, grads, step, relative: bool = False
               ) -> Dict[str, Tensor]:
        """Steepest-ascent step of every ball.

        ``step`` is a float or a per-sample ``[n]`` tensor, in budget units,
        or as a fraction of each ball's ``eps`` when ``relative`` (APGD's
        step 2ε with per-modality budgets). None = each ball's
        ``step_size``.
        """
        out = {}
        for b in self.balls:
            out.update(b.ascent(grads, step * b.eps if relative else step))
        return out

    def sample(self, index: Tensor, boundary: bool = False
               ) -> Dict[str, Tensor]:
        """A random start for the samples at ``index``, drawn for the whole
        batch (so it does not depend on which samples are attacked)."""
        out = {}
        for b in self.balls:
            draw = b.sample(self.clean, self.generator, boundary=boundary)
            out.update({m: t[index] for m, t in draw.items()})
        return self.clamp(self.take(index), out)


class BallAttack(Perturbation):
    """Base of the budgeted input attacks (FGM, PGD, APGD, Square).

    Args:
        budgets (Sequence[tuple]): ``(modalities or None, eps)`` per ball;
            ``None`` = every modality of the input (one joint ball). A
            modality may appear in one ball only. A zero budget is dropped
            (its modalities are untouched).
        kind (str): name prefix, e.g. ``'pgd'``, ``'apgd-ce'``.
        label (str, optional): budget label for the name (``'audio'``,
            ``'joint'``); None lists each ball as ``modality@eps``.
            Defaults to None.
        norm (str): ``'L2'`` (per-sample L2 over each ball's modalities) or
            ``'Linf'`` (per element). Defaults to ``'L2'``.
        seed (int): seed of the random draws; every call re-seeds, so the
            attack is a pure function of its inputs. Defaults to 0.
        clamp (bool): clamp to each modality's ``InputSpace`` bounds.
            Defaults to True.
        eps_unit (str): ``'normalized'`` (budgets in the model's input
            space) or ``'raw'`` (raw units, e.g. 8 for 8/255 of a 0..255
            pixel range; needs ``spaces[m].std``, per channel).
            Defaults to ``'normalized'``.
        name (str, optional): overrides the default name. Defaults to None.
    """

    def __init__(self, budgets: Sequence[Tuple[Optional[Sequence[str]],
                                               float]],
                 kind: str, label: Optional[str] = None, norm: str = 'L2',
                 seed: int = 0, clamp: bool = True,
                 eps_unit: str = 'normalized', name: Optional[str] = None):
        super().__init__(name)
        if eps_unit not in EPS_UNITS:
            raise ValueError(
                f'eps_unit must be one of {EPS_UNITS}, got {eps_unit!r}')
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'seed must be an int, got {seed!r}')
        self.kind, self.label = kind, label
        self.norm = check_norm(norm)
        self.seed, self.clamp, self.eps_unit = seed, bool(clamp), eps_unit
        self.budgets = self._check_budgets(budgets)

    @staticmethod
    def _check_budgets(budgets):
        if not budgets:
            raise ValueError('an attack needs at least one budget')
        out, seen = [], []
        for modalities, eps in budgets:
            if modalities is not None:
                modalities = unique(as_names(modalities), 'modalities')
                if not modalities:
                    raise ValueError('a budget needs at least one modality')
                clash = [m for m in modalities if m in seen]
                if clash:
                    raise ValueError(f'modalities {clash} are in two budgets')
                seen.extend(modalities)
            # Name the modality in messages when there are several budgets.
            key = f'[{modalities[0]!r}]' if len(budgets) > 1 and modalities \
                else ''
            out.append((modalities, check_nonneg(eps, 'eps' + key)))
        if len(out) > 1 and any(m is None for m, _ in out):
            raise ValueError(
                'a budget over all modalities must be the only one')
        return out

    # ---- identity ---------------------------------------------------------

    @property
    def modalities(self) -> Optional[Tuple[str, ...]]:
        if self.budgets[0][0] is None:
            return None
        return tuple(m for mods, _ in self.budgets for m in mods)

    @property
    def eps(self):
        """The budget: a float, or ``{modality: eps}`` for several balls."""
        if len(self.budgets) == 1:
            return self.budgets[0][1]
        return {m: e for mods, e in self.budgets for m in mods}

    def name_suffix(self) -> str:
        """``'_linf'`` for L∞ then ``'_raw'`` for raw units (L2 names are
        unchanged from the original protocol)."""
        return norm_suffix(self.norm, self.eps_unit)

    def default_name(self) -> str:
        if self.label is not None:
            return (f'{self.kind}_{self.label}@{format_value(self.eps)}'
                    f'{self.name_suffix()}')
        parts = '+'.join(f'{m}@{format_value(e)}'
                         for mods, e in self.budgets for m in mods)
        return f'{self.kind}_{parts}{self.name_suffix()}'

    def with_eps(self, eps) -> 'BallAttack':
        """A copy at another budget, every other setting kept (sweeps).

        Args:
            eps (float | dict): a float for a single ball, or ``{modality:
                eps}`` with the keys of a per-modality budget.

        Returns:
            BallAttack: same class and settings, default name.
        """
        if self.label is None:  # per-modality budgets
            keys = [mods[0] for mods, _ in self.budgets]
            if not isinstance(eps, Mapping) or set(eps) != set(keys):
                raise ValueError(f'{self.name}: per-modality budgets need an '
                                 f'eps dict with keys {keys}, got {eps!r}')
            budgets = [(mods, eps[mods[0]]) for mods, _ in self.budgets]
        else:
            if isinstance(eps, Mapping):
                raise ValueError(f'{self.name}: one budget, got {eps!r}')
            budgets = [(self.budgets[0][0], eps)]
        new = copy.copy(self)
        new.budgets = self._check_budgets(budgets)
        new._name = None
        return new

    def describe(self) -> dict:
        """See :meth:`Perturbation.describe`; one ball is a curve point.

        ``kind`` is the name prefix (``'pgd'``, ``'apgd-ce'``, ...); the
        curve of a single-ball attack is ``<kind>_<label><suffix>`` at
        abscissa ``budget = eps``. ``settings`` holds ``norm``, ``eps``
        (float or per-modality dict), ``eps_unit``, ``space``, ``clamp`` and
        ``seed``; subclasses add their own (steps, restarts, losses, ...)
        with :meth:`settings`.
        """
        curve = budget = None
        if self.label is not None:
            curve = f'{self.kind}_{self.label}{self.name_suffix()}'
            budget = self.eps
        return description(
            self, kind=self.kind, unit=self.eps_unit, label=self.label,
            curve=curve, budget=budget, settings=dict(
                dict(norm=self.norm, eps=self.eps, eps_unit=self.eps_unit,
                     space=BUDGET_SPACE[self.eps_unit], clamp=self.clamp,
                     seed=self.seed), **self.settings()))

    def settings(self) -> dict:
        """The attack's own reproducibility settings for :meth:`describe`."""
        return {}

    # ---- running ----------------------------------------------------------

    def geometry(self, x: Dict[str, Tensor], y: Tensor,
                 spaces: Spaces) -> Optional[Geometry]:
        """Check the call and build its :class:`Geometry` (None = no-op)."""
        check_labels(x, y)
        if self.modalities is not None:
            require_modalities(x, self.modalities, self.name)
        ball = BALLS[self.norm]
        balls = [ball(tuple(mods) if mods is not None else tuple(x), e,
                      self.ball_step(i))
                 for i, (mods, e) in enumerate(self.budgets) if e > 0]
        if not balls:
            return None
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                f'{self.name}: attacks need autograd, which '
                'torch.inference_mode() disables; use torch.no_grad()')
        attacked = [m for b in balls for m in b.modalities]
        ref = x[attacked[0]]
        scale = {m: self._unit_scale(m, spaces, ref) for m in attacked}
        space = {m: space_of(spaces, m) if self.clamp else None
                 for m in attacked}
        generator = torch.Generator(device=ref.device)
        generator.manual_seed(self.seed)
        return Geometry(balls, x, scale, space, generator)

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

    def ball_step(self, i: int) -> Optional[float]:
        """Fixed step size of budget ``i`` (PGD), None for attacks with
        their own schedule."""
        return None

    def search(self, forward: ForwardFn, geo: Geometry, y: Tensor,
               index: Tensor) -> Dict[str, Tensor]:
        """Find ``u`` (budget units, ``[n, ...]`` per attacked modality) for
        the samples at ``index``; implemented by each attack."""
        raise NotImplementedError

    def attack(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
               spaces: Spaces = None, active: Optional[Tensor] = None,
               logits: bool = True) -> AttackOutput:
        """Attack the ``active`` samples of the batch.

        Args:
            forward (callable): ``forward(x, drop=()) -> [B, K]`` logits.
            x (dict[str, Tensor]): the whole batch, normalised, batch first.
            y (Tensor): labels, LongTensor ``[B]``.
            spaces (dict, optional): per-modality ``InputSpace``.
                Defaults to None.
            active (Tensor, optional): bool ``[B]`` mask of the samples to
                attack; None = all. Defaults to None.
            logits (bool): also return the fused logits at the result (one
                forward of the active samples under ``no_grad``).
                Defaults to True.

        Returns:
            AttackOutput: index, perturbed attacked modalities, logits and
            fooled mask of the active samples.
        """
        geo = self.geometry(x, y, spaces)
        if active is None:
            index = torch.arange(y.shape[0], device=y.device)
        else:
            index = torch.nonzero(active.to(y.device)).flatten()
        xs = dict(x) if active is None else {m: t[index]
                                             for m, t in x.items()}
        if geo is None or index.numel() == 0:
            adv = {}
        else:
            with torch.enable_grad():
                u = self.search(forward, geo, y, index)
            adv = {m: t.detach() for m, t in geo.valid(xs, u).items()}
        out = AttackOutput(index=index, adv=adv)
        if logits:
            inputs = dict(xs)
            inputs.update(adv)
            with torch.no_grad():
                out.logits = forward(inputs) if index.numel() else \
                    torch.zeros(0, 0)
            out.fooled = out.logits.argmax(dim=1) != y[index] \
                if index.numel() else torch.zeros(0, dtype=torch.bool)
        return out

    def perturb(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Dict[str, Tensor]:
        out = dict(x)
        out.update(self.attack(forward, x, y, spaces, logits=False).adv)
        return out
