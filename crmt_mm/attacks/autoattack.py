"""An AutoAttack-style ensemble over a dict of modalities, and budget sweeps.

AutoAttack (Croce & Hein, ICML 2020) runs diverse attacks in sequence, each
only on the points that are still robust, and reports the per-sample worst
case. :class:`MultiModalAutoAttack` does the same for the fused logits of a
multi-modal model under one budget (uni-modal, joint or per-modality, L2 or
L∞), and :meth:`MultiModalAutoAttack.sweep` evaluates ascending budgets with
nested balls: a point broken within ε is broken within every ε' > ε, so each
budget attacks only the survivors of the previous one.

Versions:

* ``'standard'``: APGD-CE (100 steps), APGD-T (targeted DLR over the 9 --
  at most K − 1 -- most likely other classes, 100 steps each), Square
  (5,000 queries). AutoAttack's FAB-T is **not** included.
* ``'fast'``: APGD-CE (50 steps), APGD-T (3 targets, 50 steps each),
  Square (1,000 queries): about a fifth of the gradient steps and queries.
* ``'reference'``: FGM then PGD with 4 steps of ε/3, no random start, CE
  only -- the original CRMT code's protocol, kept for comparability.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .apgd import APGD
from .ball_attack import BallAttack, per_modality_budgets
from .base import (BUDGET_SPACE, ForwardFn, Perturbation, Spaces, check_labels,
                   description, per_sample)
from .fgm import MultiModalFGM, PerModalityFGM, UniModalFGM
from .pgd import MultiModalPGD, PerModalityPGD, UniModalPGD
from .square import Square

VERSIONS = ('standard', 'fast', 'reference')

#: Version defaults: APGD steps, APGD-T targets, Square queries.
DEFAULTS = dict(standard=dict(steps=100, n_targets=9, queries=5000),
                fast=dict(steps=50, n_targets=3, queries=1000))


@dataclass
class EnsembleResult:
    """Outcome of :meth:`MultiModalAutoAttack.run` on a batch of B samples.

    Attributes:
        logits (Tensor): ``[B, K]`` fused logits under the worst case (the
            clean logits of clean-misclassified samples, the breaking
            member's for broken ones, the last member's for robust ones).
        adv (dict[str, Tensor]): the whole input dict, attacked modalities
            replaced by the chosen perturbed inputs.
        robust (Tensor): ``[B]`` bool, correct under every member.
        broken_by (list[str | None]): per sample, ``'clean'`` (misclassified
            without attack), the name of the first member that broke it, or
            None if robust.
        fooled (dict[str, Tensor]): per member name, ``[B]`` bool: the
            member fooled the sample (False where it did not attack it).
        attacked (dict[str, int]): per member, samples it attacked.
        gradient_free_only (Tensor): ``[B]`` bool, broken by a
            gradient-free member (Square) after every gradient member
            failed on it (the gradient-masking warning sign).
        alive (Tensor): ``[B]`` bool, the samples the ensemble attacked
            (correctly classified and, in a nested sweep, not broken at a
            smaller budget).
    """

    logits: Tensor
    adv: Dict[str, Tensor]
    robust: Tensor
    broken_by: List[Optional[str]]
    fooled: Dict[str, Tensor]
    attacked: Dict[str, int]
    gradient_free_only: Tensor
    alive: Tensor

    @property
    def accuracy(self) -> float:
        """Robust accuracy of the batch."""
        return self.robust.float().mean().item()

    def per_attack(self) -> List[dict]:
        """Per member: samples attacked, samples broken, robust accuracy of
        the batch after it (the cumulative worst case)."""
        out, robust = [], self.alive
        for name, fooled in self.fooled.items():
            robust = robust & ~fooled
            out.append(dict(name=name, attacked=self.attacked[name],
                            broken=int((fooled & self.alive).sum()),
                            robust_accuracy=robust.float().mean().item()))
        return out


@dataclass
class SweepResult:
    """Outcome of :meth:`MultiModalAutoAttack.sweep` over ascending budgets.

    Attributes:
        budgets (list): the budgets, ascending (floats, or per-modality
            dicts).
        results (list[EnsembleResult]): one per budget, already nested
            (a sample broken at a smaller budget keeps that result).
        robust (Tensor): ``[n_budgets, B]`` bool; non-increasing in budget.
        break_eps (Tensor): ``[B]`` float, the smallest budget of the grid
            at which the sample is broken (0 for clean-misclassified, inf
            if never); for per-modality budgets, the index-th budget's
            largest entry.
        break_index (Tensor): ``[B]`` long, index of that budget (-1 for
            clean-misclassified, ``n_budgets`` if never).
        broken_by (list[str | None]): the member that broke it there.
        gradient_free_only (Tensor): ``[B]`` bool, at any budget.
    """

    budgets: list
    results: List[EnsembleResult]
    robust: Tensor
    break_eps: Tensor
    break_index: Tensor
    broken_by: List[Optional[str]]
    gradient_free_only: Tensor
    accuracy: List[float] = field(default_factory=list)


class MultiModalAutoAttack(Perturbation):
    """Attack ensemble run survivor-only, with the per-sample worst case.

    Members run in order, each on the samples that are correctly classified
    and not yet broken by an earlier member; a sample is robust only if it
    survives all of them. The budget is written as for every attack of this
    package: ``modality='audio'`` (uni-modal), ``eps`` a dict (one ball per
    modality) or a joint ball over ``modalities`` (None = all).

    Args:
        eps (float | dict): the budget (L2 per sample, or L∞ per element).
        version (str): ``'standard'``, ``'fast'`` or ``'reference'`` (module
            docstring). Defaults to ``'standard'``.
        norm (str): ``'L2'`` or ``'Linf'``. Defaults to ``'L2'``.
        modality (str, optional): the attacked modality. Defaults to None.
        modalities (Sequence[str], optional): modalities of a joint budget.
            Defaults to None.
        steps (int, optional): APGD steps; None = the version's default.
            Defaults to None.
        restarts (int): APGD random restarts per target. Defaults to 1.
        n_targets (int, optional): APGD-T targets; None = the version's.
            Defaults to None.
        queries (int, optional): Square queries; None = the version's.
            Defaults to None.
        seed (int): member i uses ``seed + i``. Defaults to 0.
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'``.
            Defaults to ``'normalized'``.
        name (str, optional): overrides e.g. ``'aa-standard_audio@0.5'``.
            Defaults to None.

    Example:
        >>> dict(type='MultiModalAutoAttack', version='standard',
        ...      modality='audio', eps=[0.5, 1.0, 2.0, 4.0])
        >>> aa = MultiModalAutoAttack(8.0, norm='Linf', modality='visual',
        ...                           eps_unit='raw')
        >>> result = aa.run(model.fused_logits, x, y, spaces)
    """

    def __init__(self, eps: Union[float, Mapping[str, float]],
                 version: str = 'standard', norm: str = 'L2',
                 modality: Optional[str] = None,
                 modalities: Optional[Sequence[str]] = None,
                 steps: Optional[int] = None, restarts: int = 1,
                 n_targets: Optional[int] = None,
                 queries: Optional[int] = None, seed: int = 0,
                 clamp: bool = True, eps_unit: str = 'normalized',
                 name: Optional[str] = None):
        super().__init__(name)
        if version not in VERSIONS:
            raise ValueError(
                f'version must be one of {VERSIONS}, got {version!r}')
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'seed must be an int, got {seed!r}')
        self.version = version
        self._args = dict(eps=eps, norm=norm, modality=modality,
                          modalities=modalities, steps=steps,
                          restarts=restarts, n_targets=n_targets,
                          queries=queries, seed=seed, clamp=clamp,
                          eps_unit=eps_unit)
        self.members: List[BallAttack] = self._members(**self._args)

    def _members(self, eps, norm, modality, modalities, steps, restarts,
                 n_targets, queries, seed, clamp, eps_unit):
        common = dict(clamp=clamp, eps_unit=eps_unit, norm=norm)
        if self.version == 'reference':
            given = [k for k, v in (('steps', steps), ('n_targets', n_targets),
                                    ('queries', queries)) if v is not None]
            if given or restarts != 1:
                raise ValueError(
                    f"version='reference' is the fixed protocol (FGM + PGD, "
                    f'4 steps of eps/3); remove {given or ["restarts"]}')
            if isinstance(eps, Mapping):
                eps = per_modality_budgets(eps)
                return [PerModalityFGM(eps, **common),
                        PerModalityPGD(eps, seed=seed, **common)]
            if modality is not None:
                return [UniModalFGM(modality, eps, **common),
                        UniModalPGD(modality, eps, seed=seed, **common)]
            return [MultiModalFGM(eps, modalities, **common),
                    MultiModalPGD(eps, modalities, seed=seed, **common)]
        d = DEFAULTS[self.version]
        steps = d['steps'] if steps is None else steps
        n_targets = d['n_targets'] if n_targets is None else n_targets
        queries = d['queries'] if queries is None else queries
        budget = dict(eps=eps, modality=modality, modalities=modalities,
                      **common)
        return [
            APGD(loss='ce', steps=steps, restarts=restarts, seed=seed,
                 **budget),
            APGD(loss='dlr-targeted', steps=steps, restarts=restarts,
                 n_targets=n_targets, seed=seed + 1, **budget),
            Square(queries=queries, seed=seed + 2, **budget)]

    # ---- identity ---------------------------------------------------------

    @property
    def modalities(self):
        return self.members[0].modalities

    @property
    def eps(self):
        return self.members[0].eps

    @property
    def norm(self) -> str:
        return self._args['norm']

    @property
    def eps_unit(self) -> str:
        return self._args['eps_unit']

    @property
    def label(self) -> Optional[str]:
        return self.members[0].label

    def default_name(self) -> str:
        return f'aa-{self.version}_' + self.members[0].default_name().split(
            '_', 1)[1]

    def with_eps(self, eps) -> 'MultiModalAutoAttack':
        """The same ensemble at budget ``eps`` (default name)."""
        new = MultiModalAutoAttack(version=self.version,
                                   **dict(self._args, eps=eps))
        return new

    def sweep_key(self) -> tuple:
        """Hashable settings except the budget: ensembles with equal keys
        form one nested sweep (:func:`nested_sweep`)."""
        args = {k: v for k, v in self._args.items() if k != 'eps'}
        return (self.version,) + tuple(
            (k, tuple(v) if isinstance(v, list) else v)
            for k, v in sorted(args.items()))

    def describe(self) -> dict:
        """See :meth:`Perturbation.describe`: kind ``'aa-<version>'``, a
        point of the curve ``aa-<version>_<label><suffix>`` when the budget
        is a single ball; ``settings`` holds the norm, budget, unit, space,
        clamp and seed, the members' own descriptions (steps, restarts,
        losses, ...), the schedule and what is left out."""
        members = [m.describe() for m in self.members]
        suffix = self.members[0].name_suffix()
        kind = f'aa-{self.version}'
        single = self.label is not None
        return description(
            self, kind=kind, unit=self.eps_unit, label=self.label,
            curve=f'{kind}_{self.label}{suffix}' if single else None,
            budget=self.eps if single else None,
            settings=dict(
                version=self.version, norm=self.norm, eps=self.eps,
                eps_unit=self.eps_unit, space=BUDGET_SPACE[self.eps_unit],
                clamp=self._args['clamp'], seed=self._args['seed'],
                attacks=[m['name'] for m in members],
                steps=[m['settings'].get('steps') for m in members],
                restarts=[m['settings'].get('restarts') for m in members],
                losses=[m['settings']['losses'][0] for m in members],
                members=members,
                schedule='members in order, each on the samples still '
                         'robust (survivor-only); per-sample worst case',
                not_included=None if self.version == 'reference' else
                'FAB-T (part of AutoAttack standard) is not implemented'))

    # ---- running ----------------------------------------------------------

    def run(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
            spaces: Spaces = None, survivors: bool = True
            ) -> EnsembleResult:
        """Run the ensemble on a batch.

        Args:
            forward (callable): ``forward(x, drop=()) -> [B, K]`` logits.
            x (dict[str, Tensor]): normalised inputs, batch first.
            y (Tensor): labels ``[B]``.
            spaces (dict, optional): per-modality ``InputSpace``.
                Defaults to None.
            survivors (bool): each member attacks only what is still robust
                (False: every member attacks every active sample -- same
                per-sample outcome, the naive cost; for benchmarks).
                Defaults to True.

        Returns:
            EnsembleResult: see there.
        """
        check_labels(x, y)
        with torch.no_grad():
            logits = forward(x).detach()
        clean_ok = logits.argmax(dim=1) == y
        return self._run_members(forward, x, y, spaces, logits, clean_ok,
                                 clean_ok, survivors)

    def _run_members(self, forward, x, y, spaces, logits, clean_ok, alive,
                     survivors):
        """Members in order on the ``alive`` samples (see :meth:`run`)."""
        logits = logits.clone()
        adv = dict(x)
        broken_by: List[Optional[str]] = [
            None if ok else 'clean' for ok in clean_ok.tolist()]
        fooled, attacked = {}, {}
        robust = alive.clone()
        grad_free = torch.zeros_like(alive)
        for i, member in enumerate(self.members):
            out = member.attack(forward, x, y, spaces,
                                active=robust if survivors else alive)
            mask = torch.zeros_like(alive)
            mask[out.index] = out.fooled
            fooled[member.name] = mask
            attacked[member.name] = int(out.index.numel())
            new = mask & robust  # broken first by this member
            robust = robust & ~mask
            # Broken samples keep the breaking member's inputs and logits,
            # robust ones the last member's.
            rows = new | robust if i == len(self.members) - 1 else new
            sel = rows[out.index]
            if bool(sel.any()):
                where = out.index[sel]
                logits[where] = out.logits[sel]
                for m, t in out.adv.items():
                    if adv[m] is x[m]:
                        adv[m] = x[m].detach().clone()
                    adv[m][where] = t[sel]
            for j in torch.nonzero(new).flatten().tolist():
                broken_by[j] = member.name
            if isinstance(member, Square):
                grad_free = grad_free | new
        return EnsembleResult(logits=logits, adv=adv, robust=robust,
                              broken_by=broken_by, fooled=fooled,
                              attacked=attacked, alive=alive,
                              gradient_free_only=grad_free)

    def perturb(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Dict[str, Tensor]:
        return self.run(forward, x, y, spaces).adv

    def predict(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Tensor:
        return self.run(forward, x, y, spaces).logits

    def sweep(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
              spaces: Spaces = None, budgets: Optional[Sequence] = None,
              nested: bool = True) -> SweepResult:
        """Evaluate this ensemble at ascending budgets.

        With ``nested=True`` each budget attacks only the survivors of the
        previous one (the balls are nested, so a point broken at ε stays
        broken at every larger ε) and members attack survivors only; with
        ``nested=False`` every member attacks every sample at every budget
        (the naive cost, same per-sample outcomes).

        Args:
            forward, x, y, spaces: as in :meth:`run`.
            budgets (Sequence): ascending floats, or per-modality dicts
                that grow entry-wise; None = ``[self.eps]``.
                Defaults to None.
            nested (bool): survivor-only and nested. Defaults to True.

        Returns:
            SweepResult: see there.
        """
        budgets = [self.eps] if budgets is None else list(budgets)
        _check_ascending(budgets)
        check_labels(x, y)
        with torch.no_grad():
            clean = forward(x).detach()
        clean_ok = clean.argmax(dim=1) == y
        n, b = len(budgets), y.shape[0]
        results, robust = [], []
        alive = clean_ok
        previous = None
        grad_free = torch.zeros_like(clean_ok)
        for eps in budgets:
            ens = self if _same(eps, self.eps) else self.with_eps(eps)
            res = ens._run_members(forward, x, y, spaces, clean, clean_ok,
                                   alive if nested else clean_ok, nested)
            # Nested balls: a break at a smaller budget holds here too (also
            # for nested=False, so that both give the same outcomes).
            if previous is not None:
                _carry(res, previous, ~previous.robust & clean_ok)
            results.append(res)
            robust.append(res.robust)
            grad_free = grad_free | res.gradient_free_only
            alive = res.robust
            previous = res
        robust = torch.stack(robust)
        index = torch.full((b,), n, dtype=torch.long)
        index[~clean_ok.cpu()] = -1
        eps_of = torch.full((b,), math.inf)
        eps_of[~clean_ok.cpu()] = 0.0
        broken_by = [None if ok else 'clean' for ok in clean_ok.tolist()]
        for j in range(n - 1, -1, -1):
            hit = (~robust[j].cpu()) & clean_ok.cpu()
            index[hit] = j
            eps_of[hit] = _scalar(budgets[j])
        for i in range(b):
            if 0 <= index[i] < n:
                broken_by[i] = results[index[i]].broken_by[i]
        return SweepResult(budgets=budgets, results=results, robust=robust,
                           break_eps=eps_of, break_index=index,
                           broken_by=broken_by,
                           gradient_free_only=grad_free,
                           accuracy=[r.accuracy for r in results])


def _scalar(eps) -> float:
    return max(eps.values()) if isinstance(eps, Mapping) else float(eps)


def _same(a, b) -> bool:
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return isinstance(a, Mapping) and isinstance(b, Mapping) and \
            dict(a) == dict(b)
    return float(a) == float(b)


def _check_ascending(budgets) -> None:
    if not budgets:
        raise ValueError('a sweep needs at least one budget')
    for lo, hi in zip(budgets, budgets[1:]):
        if isinstance(lo, Mapping) and isinstance(hi, Mapping):
            ok = set(lo) == set(hi) and all(lo[m] <= hi[m] for m in lo)
        elif not isinstance(lo, Mapping) and not isinstance(hi, Mapping):
            ok = lo <= hi
        else:
            ok = False
        if not ok:
            raise ValueError(
                f'sweep budgets must be ascending (nested balls), got {lo!r} '
                f'before {hi!r}')


def _carry(res: EnsembleResult, prev: EnsembleResult, rows: Tensor) -> None:
    """Samples broken at a smaller budget keep that result (nested balls)."""
    if not bool(rows.any()):
        return
    res.logits[rows] = prev.logits[rows]
    for m, t in prev.adv.items():
        res.adv[m] = torch.where(per_sample(rows, t), t, res.adv[m])
    res.robust = res.robust & ~rows
    for i in torch.nonzero(rows).flatten().tolist():
        res.broken_by[i] = prev.broken_by[i]


def nested_sweep(ensembles: Sequence[MultiModalAutoAttack],
                 forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                 spaces: Spaces = None, nested: bool = True) -> SweepResult:
    """Run ensembles that differ only in budget as one nested sweep.

    ``build_perturbations`` expands ``eps=[...]`` into one ensemble per
    budget; group them by :meth:`MultiModalAutoAttack.sweep_key` and pass
    each group here. Results are in ascending-budget order (``budgets``).

    Raises:
        ValueError: the ensembles differ in more than the budget.
    """
    if not ensembles:
        raise ValueError('nested_sweep needs at least one ensemble')
    keys = {e.sweep_key() for e in ensembles}
    if len(keys) != 1:
        raise ValueError('nested_sweep: the ensembles differ in more than '
                         f'eps: {sorted(e.name for e in ensembles)}')
    order = sorted(ensembles, key=lambda e: _scalar(e.eps))
    return order[0].sweep(forward, x, y, spaces, [e.eps for e in order],
                          nested=nested)


__all__ = ['MultiModalAutoAttack', 'EnsembleResult', 'SweepResult',
           'nested_sweep', 'VERSIONS']
