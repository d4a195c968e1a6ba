"""Per-sample robust records -> accuracies, curves and certified accuracy.

Pure functions over plain Python records (no framework, no model), shared
by :class:`~crmt_mm.evaluation.RobustAccMetric` (which turns a summary into
logged scalars) and :mod:`crmt_mm.evaluation.report` (which lays the same
summary out as JSON, markdown and a figure), so the two can never disagree.

A record is what the robust evaluator writes for one sample::

    label           int, the true class
    preds           {'clean': int, <perturbation name>: int or None}
                    (None once that perturbation failed)
    failed          {name: 'ErrorType: message'}, only if one failed
    skipped         [names] left out of this sample by the evaluator's
                    ``subset`` (their preds are None), only if any
    subset          bool, the sample is in the subsample (with ``subset``)
    ensemble        {ensemble name: {'broken_by': member name, 'clean' or
                    None, 'gradient_free_only': bool}} (with ensembles)
    trust           the trust figures of :mod:`crmt_mm.evaluation.trust`
    radius          float, joint certified radius r(x) (with certification)
    modality_radii  {modality: float}, every r^(m)(x) (with certification)
"""
import math
import numbers
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from crmt_mm.attacks.base import budget_norm, format_value, norm_suffix

#: Metric names the perturbation names must not shadow.
RESERVED = ('clean', 'certified', 'auc_', 'radius_', 'cert_', 'smoothing_',
            'weakest')

#: Name prefix (and curve kind) of the weakest-modality records.
WEAKEST = 'weakest'


def worst_case_groups(worst_case: Union[None, str, Dict[str, Sequence[str]]],
                      descriptions: List[dict]) -> List[dict]:
    """Worst-case groups: ``'auto'`` (every set of budgeted attacks at one
    label, budget, unit and norm, ensembles excluded as they are worst cases
    already) or ``{name: [member names]}``; each group is a description
    (``kind='worst'``, ``members``) placed on a curve when its members share
    one L2 budget.

    ``'auto'`` adds the weakest-modality records of
    :func:`weakest_groups` (``kind='weakest'``, ``weakest@<eps>``) after
    the worst-case groups.

    Raises:
        ValueError: a member is not evaluated, or a group name clashes with
            a perturbation name or uses the reserved prefix ``weakest``.
    """
    by_name = {d['name']: d for d in descriptions}
    if worst_case is None:
        return []
    if worst_case == 'auto':
        points: Dict[tuple, List[str]] = {}
        for d in descriptions:
            norm = budget_norm(d)
            if norm is not None and d['budget'] is not None:
                points.setdefault((d['label'], d['budget'], d['unit'], norm),
                                  []).append(d['name'])
        spec = {}
        for (label, budget, unit, norm), members in points.items():
            if len(members) > 1:
                spec[f'worst_{label}@{format_value(budget)}'
                     f'{norm_suffix(norm, unit)}'] = members
    else:
        spec = worst_case
    groups = []
    for name, members in spec.items():
        unknown = [m for m in members if m not in by_name]
        if unknown:
            raise ValueError(
                f'worst_case[{name!r}] names unknown perturbations '
                f'{unknown}; evaluated: {sorted(by_name)}')
        descs = [by_name[m] for m in members]
        group = dict(name=name, members=list(members), kind='worst',
                     curve=None, budget=None, unit=None, label=None,
                     modalities=descs[0]['modalities'])
        points = {(d['label'], d['budget'], d['unit'], budget_norm(d))
                  for d in descs}
        if len(points) == 1 and next(iter(points))[3] is not None:
            label, budget, unit, norm = points.pop()
            group.update(curve=f'worst_{label}{norm_suffix(norm, unit)}',
                         budget=budget, unit=unit, label=label,
                         group=descs[0].get('group'), norm=norm)
        groups.append(group)
    clash = sorted({g['name'] for g in groups} & set(by_name))
    if clash:
        raise ValueError(f'worst_case names {clash} clash with '
                         'perturbation names; rename them')
    reserved = sorted(g['name'] for g in groups
                      if g['name'].startswith(WEAKEST))
    if reserved:
        raise ValueError(f'worst_case names {reserved} use the reserved '
                         f'prefix {WEAKEST!r} (weakest-modality records); '
                         'rename them')
    if worst_case == 'auto':
        groups += weakest_groups(descriptions)
    return groups


def weakest_groups(descriptions: List[dict]) -> List[dict]:
    """Weakest-modality records, one per budget at which uni-modal budgeted
    attacks exist on two or more modalities.

    A uni-modal budgeted attack is a description with exactly one modality,
    a ``budget`` and a norm (:func:`~crmt_mm.attacks.base.budget_norm`):
    PGD, FGM, APGD, Square, ensembles and ``WorstCase`` alike; noise,
    missing modality and joint or per-modality budgets are not. Budgets
    are matched with their unit and norm. The record ``weakest@<eps>``
    (``_linf``/``_raw`` suffixes as in the perturbation names) has every
    such attack at that budget as member: a clip is correct only if it is
    correct under all of them, i.e. the per-clip worst case over modality
    and attack, the robust accuracy against an attacker who picks, per
    clip, the modality (and attack) that breaks it. Its points across
    budgets form the curve ``weakest<suffix>``.

    Returns:
        list[dict]: descriptions like the worst-case groups', with
        ``kind='weakest'``, ``members`` and ``by_modality`` ({modality:
        member names}, in order of appearance).
    """
    points: Dict[tuple, Dict[str, List[str]]] = {}
    for d in descriptions:
        mods = d['modalities']
        norm = budget_norm(d)
        if norm is None or d['budget'] is None or not mods or \
                len(mods) != 1:
            continue
        key = (float(d['budget']), d['unit'], norm)
        points.setdefault(key, {}).setdefault(mods[0], []).append(
            d['name'])
    groups = []
    for (budget, unit, norm), by_modality in points.items():
        if len(by_modality) < 2:
            continue
        suffix = norm_suffix(norm, unit)
        groups.append(dict(
            name=f'{WEAKEST}@{format_value(budget)}{suffix}',
            members=[n for names in by_modality.values() for n in names],
            by_modality=by_modality, kind=WEAKEST,
            curve=f'{WEAKEST}{suffix}', budget=budget, unit=unit,
            label=WEAKEST, group=WEAKEST, norm=norm,
            modalities=list(by_modality)))
    return groups


def check_names(descriptions: List[dict]) -> None:
    """Refuse perturbation names that would shadow a metric name."""
    for d in descriptions:
        if d['name'].startswith(RESERVED):
            raise ValueError(
                f'perturbation name {d["name"]!r} clashes with the metric '
                f'names (reserved prefixes {RESERVED}); rename it')


def summarize(records: List[dict], descriptions: List[dict],
              groups: List[dict], modalities: Sequence[str],
              radii: Optional[Sequence[float]]) -> dict:
    """Everything the metric logs and the report shows, from the records.

    Args:
        records (list[dict]): one record per sample (module docstring).
        descriptions (list[dict]): ``describe()`` of each perturbation.
        groups (list[dict]): from :func:`worst_case_groups`.
        modalities (Sequence[str]): the model's modality order.
        radii (Sequence[float], optional): certified radii R; None when
            the records carry no radii (certification off or skipped).

    Returns:
        dict: ``num_samples``; ``accuracy`` (ordered ``{name: float}``:
        ``clean``, then every successful perturbation and group, the
        weakest-modality records last);
        ``perturbations`` and ``worst_case`` (each description with
        ``status``, ``accuracy``, ``error``, ``evaluated_samples`` and
        ``clean_accuracy_on_evaluated``, the clean accuracy on the same
        clips; a weakest-modality record also ``per_modality``, each
        modality's worst case over its members on the same clips);
        ``curves`` (a curve's point at budget 0 is the clean
        accuracy on the clips its budgets were evaluated on, so a
        subsampled curve starts from its subsample); ``certification``
        (None without radii, else ``certified``, ``radius_median``,
        ``violations``). Empty sections when there is no record.
    """
    n = len(records)
    out = dict(num_samples=n, accuracy={}, perturbations=[], worst_case=[],
               curves={}, certification=None)
    if n == 0:
        return out
    labels = np.array([r['label'] for r in records], dtype=np.int64)
    correct = {'clean': _column(records, 'clean') == labels}
    # Samples each perturbation was run on (all but a subset's left-outs);
    # ``correct`` is True on the others so no check counts them as broken.
    evaluated: Dict[str, np.ndarray] = {}
    accuracy = out['accuracy']
    accuracy['clean'] = float(correct['clean'].mean())
    for desc in descriptions:
        name = desc['name']
        entry = dict(desc, status='ok', accuracy=None, error=None,
                     evaluated_samples=n)
        column = [r['preds'][name] for r in records]
        ran = np.array([name not in r.get('skipped', ()) for r in records])
        done = [v for v, e in zip(column, ran) if e and v is not None]
        if len(done) < int(ran.sum()) or not ran.any():
            entry.update(status='failed', evaluated_samples=len(done),
                         error=_error(records, name))
        else:
            hits = np.array([v == t if e else True for v, t, e in
                             zip(column, labels, ran)], dtype=bool)
            correct[name], evaluated[name] = hits, ran
            entry['evaluated_samples'] = int(ran.sum())
            entry['clean_accuracy_on_evaluated'] = float(
                correct['clean'][ran].mean())
            entry['accuracy'] = accuracy[name] = float(hits[ran].mean())
            if desc['type'] == 'MultiModalAutoAttack':
                entry['per_attack'] = _per_attack(records, desc, ran)
        out['perturbations'].append(entry)
    for group in groups:
        entry = dict(group, status='ok', accuracy=None, error=None)
        broken = [m for m in group['members'] if m not in correct]
        if broken:
            entry.update(status='failed', error=f'members failed: {broken}')
        else:
            hits = np.logical_and.reduce(
                [correct[m] for m in group['members']])
            ran = np.logical_and.reduce(
                [evaluated[m] for m in group['members']])
            correct[group['name']], evaluated[group['name']] = hits, ran
            entry['evaluated_samples'] = int(ran.sum())
            entry['clean_accuracy_on_evaluated'] = float(
                correct['clean'][ran].mean()) if ran.any() else None
            entry['accuracy'] = accuracy[group['name']] = float(
                hits[ran].mean()) if ran.any() else None
            if group['kind'] == WEAKEST:
                # Each modality's own worst case on the same clips.
                entry['per_modality'] = {
                    m: float(np.logical_and.reduce(
                        [correct[n] for n in names])[ran].mean())
                    if ran.any() else None
                    for m, names in group['by_modality'].items()}
        out['worst_case'].append(entry)
    out['curves'] = _curves(out['perturbations'] + out['worst_case'],
                            accuracy['clean'])
    if radii is not None:
        # The weakest-modality records are not attacks of their own (their
        # members are checked one by one).
        out['certification'] = _certify(
            records, correct, descriptions +
            [g for g in groups if g['kind'] != WEAKEST], modalities, radii)
    return out


def scalars(summary: dict) -> Dict[str, float]:
    """The logged metric names (without prefix) of a :func:`summarize`."""
    metrics = dict(summary['accuracy'])
    for curve, data in summary['curves'].items():
        if data['auc'] is not None:
            metrics[f'auc_{curve}'] = data['auc']
    cert = summary['certification']
    if cert is None:
        return metrics
    for group, accuracy in cert['certified'].items():
        key = '' if group == 'joint' else f'_{group}'
        for r, acc in zip(cert['radii'], accuracy):
            metrics[f'certified{key}@{format_value(r)}'] = acc
        if cert['radius_median'][group] is not None:
            metrics[f'radius_median{key}'] = cert['radius_median'][group]
    if cert['violations']['checked']:
        metrics['cert_violations'] = cert['violations']['total']
    return metrics


def _per_attack(records: list, desc: dict, ran: np.ndarray) -> List[dict]:
    """Per ensemble member, over the evaluated samples: clips it broke
    first and the cumulative worst-case accuracy after it."""
    name = desc['name']
    broken_by = [r.get('ensemble', {}).get(name, {}).get('broken_by')
                 for r, e in zip(records, ran) if e]
    total = max(len(broken_by), 1)
    robust = sum(b != 'clean' for b in broken_by)
    out = []
    # In a nested sweep a clip broken at a smaller budget keeps the name of
    # that budget's member, so members are matched by attack kind.
    kinds = [None if b in (None, 'clean') else b.split('_', 1)[0]
             for b in broken_by]
    for member in desc['settings']['attacks']:
        broke = kinds.count(member.split('_', 1)[0])
        robust -= broke
        out.append(dict(name=member, broken=broke,
                        robust_accuracy=robust / total))
    return out


def _column(records: list, name: str) -> np.ndarray:
    return np.array([r['preds'][name] for r in records])


def _error(records: list, name: str) -> str:
    for r in records:
        message = r.get('failed', {}).get(name)
        if message is not None:
            return message
    return 'unknown error'


def _curves(entries: List[dict], clean: float) -> dict:
    """Accuracy vs budget per curve; at budget 0 the clean accuracy on the
    clips the curve was evaluated on (``clean`` when they are all)."""
    curves: Dict[str, dict] = {}
    for entry in entries:
        if entry.get('curve') is None or entry['accuracy'] is None:
            continue
        curve = curves.setdefault(entry['curve'], dict(
            kind=entry['kind'], label=entry['label'],
            group=entry.get('group', 'joint'), unit=entry['unit'],
            x='sigma' if entry['kind'] == 'noise' else 'eps',
            points={}, start=entry.get('clean_accuracy_on_evaluated')))
        curve['points'][float(entry['budget'])] = entry['accuracy']
    for curve in curves.values():
        points = curve.pop('points')
        start = curve.pop('start')
        points.setdefault(0.0, clean if start is None else start)
        budgets = sorted(points)
        accuracy = [points[b] for b in budgets]
        curve.update(budgets=budgets, accuracy=accuracy, auc=None)
        if len(budgets) >= 3:  # 0 and >= 2 positive budgets
            curve['auc'] = float(
                np.trapezoid(accuracy, budgets) / budgets[-1])
    return curves


def _certify(records: list, correct: Dict[str, np.ndarray],
             entries: List[dict], modalities: Sequence[str],
             radii: Sequence[float]) -> dict:
    """Certified accuracies, median radii and the violation check."""
    radius = np.array([r['radius'] for r in records], dtype=np.float64)
    per_modality = {m: np.array([r['modality_radii'][m] for r in records],
                                dtype=np.float64) for m in modalities}
    section = dict(radii=[float(r) for r in radii], certified={},
                   radius_median={})
    for group, values in [('joint', radius)] + list(per_modality.items()):
        section['certified'][group] = [float((values > r).mean())
                                       for r in section['radii']]
        positive = values[values > 0]
        section['radius_median'][group] = float(np.median(positive)) \
            if positive.size else None
    section['violations'] = _violations(radius, per_modality, correct,
                                        entries)
    return section


def _violations(radius: np.ndarray, per_modality: Dict[str, np.ndarray],
                correct: Dict[str, np.ndarray], entries: List[dict]) -> dict:
    """Samples with r > budget that an attack within the budget broke.

    A uni-modal attack is checked against r^(m), any other L2 attack
    against the joint r with its joint budget sqrt(sum eps_m^2); only
    budgets in the normalised space (the radii's units) are comparable.
    """
    by_attack = {}
    for entry in entries:
        if entry['name'] not in correct or entry['unit'] != 'normalized':
            continue
        budget = _joint_budget(entry)
        if budget is None:
            continue
        mods = entry['modalities']
        bound = per_modality[mods[0]] if mods and len(mods) == 1 else radius
        broken = (bound > budget) & ~correct[entry['name']]
        by_attack[entry['name']] = int(broken.sum())
    return dict(checked=sorted(by_attack), by_attack=by_attack,
                total=int(sum(by_attack.values())))


def _joint_budget(entry: dict) -> Optional[float]:
    """Joint L2 budget of an attack entry (None if not an L2 attack)."""
    if entry['kind'] == 'worst':
        # Groups carry 'norm' themselves; WorstCase descriptions in settings.
        norm = entry.get('norm') or entry.get('settings', {}).get('norm')
        return entry['budget'] if norm == 'L2' else None
    if budget_norm(entry) != 'L2':
        return None
    eps = entry['settings']['eps']
    if isinstance(eps, numbers.Real):
        return float(eps)
    return math.sqrt(sum(float(v) ** 2 for v in eps.values()))
