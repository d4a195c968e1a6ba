"""Per-sample worst case over several perturbations
(``docs/evaluation.md``)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .base import (ForwardFn, Perturbation, Spaces, budget_norm, description,
                   norm_suffix, per_sample)


class WorstCase(Perturbation):
    """A sample is robust only if it survives every member perturbation.

    Members are tried in order; per sample the result is that of the
    **first member that fools it** (prediction != y), or of the **last
    member** if none does. So the accuracy under ``WorstCase`` is the
    fraction of samples correctly classified under every member, and it is
    at most the smallest member accuracy. Members after the point where every
    sample is fooled are skipped (they cannot change the result).

    Note:
        :meth:`predict` uses each member's ``predict`` (so feature-level
        members work); :meth:`perturb` needs every member to act on inputs
        and costs one extra forward per member to decide which fools.

    Args:
        perturbations (Sequence[Perturbation]): members, tried in order.
        name (str, optional): defaults to ``'worst_<suffix>'`` when all
            members share the suffix after their kind (``fgm_audio@0.5``,
            ``pgd_audio@0.5`` -> ``worst_audio@0.5``), else
            ``'worst[<name1>,<name2>,...]'``. Defaults to None.

    Example:
        >>> atk = WorstCase([UniModalFGM('audio', 0.5),
        ...                  UniModalPGD('audio', 0.5)])
        >>> atk.name
        'worst_audio@0.5'
    """

    def __init__(self, perturbations: Sequence[Perturbation],
                 name: Optional[str] = None):
        super().__init__(name)
        members = list(perturbations) if isinstance(
            perturbations, (list, tuple)) else None
        if not members:
            raise ValueError('WorstCase needs a non-empty list of '
                             f'perturbations, got {perturbations!r}')
        for p in members:
            if not isinstance(p, Perturbation):
                raise ValueError(
                    f'WorstCase members must be Perturbation instances, got '
                    f'{type(p).__name__}')
        self.perturbations: List[Perturbation] = members
        self.acts_on_inputs = all(p.acts_on_inputs for p in members)

    @property
    def modalities(self) -> Optional[Tuple[str, ...]]:
        out: List[str] = []
        for p in self.perturbations:
            if p.modalities is None:
                return None
            out.extend(m for m in p.modalities if m not in out)
        return tuple(out)

    def default_name(self) -> str:
        names = [p.name for p in self.perturbations]
        suffixes = {n.split('_', 1)[-1] for n in names}
        if len(suffixes) == 1 and all('_' in n for n in names):
            return f'worst_{suffixes.pop()}'
        return 'worst[' + ','.join(names) + ']'

    def describe(self) -> dict:
        """See :meth:`Perturbation.describe`; a curve point only when every
        member is a budgeted attack of one norm at one budget."""
        members = [m.describe() for m in self.perturbations]
        settings = dict(members=[m['name'] for m in members],
                        rule='robust only if correct under every member')
        fields = dict(kind='worst', settings=settings)
        points = {(m['label'], m['budget'], m['unit'], budget_norm(m))
                  for m in members}
        if len(points) == 1 and None not in next(iter(points))[:2] and \
                next(iter(points))[3] is not None:
            label, budget, unit, norm = points.pop()
            settings['norm'] = norm
            fields.update(label=label, budget=budget, unit=unit,
                          curve=f'worst_{label}{norm_suffix(norm, unit)}')
        return description(self, **fields)

    def perturb(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Dict[str, Tensor]:
        if not self.acts_on_inputs:
            raise NotImplementedError(
                f'{self.name}: a member acts inside the model and has no '
                'perturbed input; call predict()')
        chosen, fooled = None, None
        for p in self.perturbations:
            adv = p.perturb(forward, x, y, spaces)
            with torch.no_grad():
                now = forward(adv).argmax(dim=1) != y
            if chosen is None:
                chosen, fooled = adv, now
            else:
                # Samples already fooled keep their earlier inputs.
                chosen = {m: chosen[m] if chosen[m] is adv[m] else
                          torch.where(per_sample(fooled, adv[m]), chosen[m],
                                      adv[m]) for m in adv}
                fooled = fooled | now
            if bool(fooled.all()):
                break
        return chosen

    def predict(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Tensor:
        chosen, fooled = None, None
        for p in self.perturbations:
            logits = p.predict(forward, x, y, spaces)
            now = logits.argmax(dim=1) != y
            if chosen is None:
                chosen, fooled = logits, now
            else:
                chosen = torch.where(fooled[:, None], chosen, logits)
                fooled = fooled | now
            if bool(fooled.all()):
                break
        return chosen
