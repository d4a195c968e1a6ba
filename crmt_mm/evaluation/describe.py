"""JSON-able descriptions of perturbations: what the report logs with
every result and how the metric groups results into curves.

One description per perturbation::

    name        result key, e.g. 'pgd_audio@0.5'
    type        class name, e.g. 'UniModalPGD'
    kind        'pgd' | 'fgm' | 'missing' | 'noise' | 'worst' | 'other'
    modalities  the perturbed modalities (None = every modality)
    label       budget target, e.g. 'audio', 'joint', 'all' (None if none)
    curve       accuracy-vs-budget curve it belongs to, e.g. 'pgd_audio'
    budget      its point on that curve (eps or sigma), None if no curve
    unit        'normalized' | 'raw' | None
    group       plot panel: the single perturbed modality or 'joint'
                (only with a curve)
    settings    everything else needed to reproduce it (eps, steps, step
                size, random start, restarts, seed, clamp, space, ...)
"""
from crmt_mm.attacks import (GaussianNoise, L2GradientAttack,
                             MissingModality, Perturbation, WorstCase)

BUDGET_SPACE = {
    'normalized': 'normalised input space (after the data preprocessor), '
                  'per-sample L2 over each modality\'s whole tensor',
    'raw': 'raw input units (before normalisation), per-sample L2'
}


def describe_perturbation(p: Perturbation) -> dict:
    """JSON-able settings of one perturbation, as logged with its result.

    ``curve``/``budget`` place the perturbation on an accuracy-vs-budget
    curve (e.g. ``pgd_audio`` at 0.5); ``group`` is the modality it acts on
    (``'joint'`` for several), which selects the panel of the report plot.
    """
    desc = dict(name=p.name, type=type(p).__name__, kind='other',
                modalities=None if p.modalities is None
                else list(p.modalities), label=None,
                curve=None, budget=None, unit=None, settings={})
    if isinstance(p, L2GradientAttack):
        desc.update(kind=p.kind, unit=p.eps_unit, label=p.label)
        desc['settings'] = dict(
            eps=p.eps, eps_unit=p.eps_unit,
            space=BUDGET_SPACE[p.eps_unit], steps=p.steps,
            step_size=[b[2] for b in p.balls]
            if len(p.balls) > 1 else p.balls[0][2],
            random_start=p.random_start, restarts=p.restarts,
            seed=p.seed if p.random_start else None, clamp=p.clamp,
            loss='cross-entropy on fused logits, untargeted')
        if p.label is not None:  # one ball: a point on a curve
            unit = '_raw' if p.eps_unit == 'raw' else ''
            desc.update(curve=f'{p.kind}_{p.label}{unit}', budget=p.eps)
    elif isinstance(p, MissingModality):
        desc.update(kind='missing', settings=dict(
            mode=p.mode, fill='0 in the normalised space (dataset mean)'
            if p.mode == 'input' else 'features zeroed (a^(m) z^(m) '
            'removed, bias kept)'))
    elif isinstance(p, GaussianNoise):
        target = p.modality if p.modality is not None else 'all'
        desc.update(kind='noise', label=target, curve=f'noise_{target}',
                    budget=p.sigma,
                    unit='normalized', settings=dict(
                        sigma=p.sigma, seed=p.seed, clamp=p.clamp,
                        space=BUDGET_SPACE['normalized']))
    elif isinstance(p, WorstCase):
        members = [describe_perturbation(m) for m in p.perturbations]
        desc.update(kind='worst', settings=dict(
            members=[m['name'] for m in members],
            rule='robust only if correct under every member'))
        points = {(m['label'], m['budget'], m['unit']) for m in members}
        # A curve only when every member is an L2 attack at one budget.
        if len(points) == 1 and None not in next(iter(points))[:2] and \
                all(m['kind'] in ('fgm', 'pgd') for m in members):
            label, budget, unit = points.pop()
            suffix = '_raw' if unit == 'raw' else ''
            desc.update(label=label, curve=f'worst_{label}{suffix}',
                        budget=budget, unit=unit)
    else:
        desc['settings'] = dict(repr=repr(p))
    if desc['curve'] is not None:
        mods = desc['modalities']
        desc['group'] = mods[0] if mods and len(mods) == 1 else 'joint'
    return desc
