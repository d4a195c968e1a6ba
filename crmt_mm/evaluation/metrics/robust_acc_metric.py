"""Accuracies under perturbations and certified accuracy from per-sample
records written by the robust evaluation loops (``crmt.md`` §10)."""
import logging
import math
import numbers
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmaction.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from crmt_mm.attacks.base import format_value

#: Data-sample field holding the robust record of one sample.
RECORD_FIELD = 'robust_record'
#: Version tag of the report layout (``robustness.json``).
REPORT_FORMAT = 'crmt_mm.robustness/1'
#: Metric names the perturbation names must not shadow.
RESERVED = ('clean', 'certified', 'auc_', 'radius_', 'cert_')


@METRICS.register_module()
class RobustAccMetric(BaseMetric):
    """Robust, missing-modality, noise and certified accuracy.

    Works with :class:`~crmt_mm.evaluation.RobustValLoop` /
    :class:`~crmt_mm.evaluation.RobustTestLoop`, which bind the list of
    perturbations (:meth:`bind`), start each evaluation (:meth:`begin`) and
    attach one record per sample: label, clean prediction, the prediction
    under every perturbation (None once it failed) and, with certification,
    the joint radius r(x) and every r^(m)(x). :meth:`process` appends
    exactly one CPU record per sample, so ``evaluate(size)`` drops the DDP
    padding and the result equals a single-process run.

    Metric names (with the default prefix ``robust``):

    * ``robust/clean``; ``robust/<perturbation name>``, e.g.
      ``robust/pgd_audio@0.5``, ``robust/missing_audio``,
      ``robust/noise_all@0.1``; a failed perturbation has no key.
    * ``robust/worst_<label>@<eps>``: per-sample worst case over members
      (correct only if correct under all), when ``worst_case`` is set.
    * ``robust/auc_<curve>``: area under accuracy vs budget over
      [0, max budget] divided by the max budget (the clean accuracy is the
      point at 0), for curves with >= 2 positive budgets, e.g.
      ``robust/auc_pgd_audio``.
    * ``robust/certified@<R>``, ``robust/certified_<m>@<R>``: fraction with
      r(x) > R (r^(m)(x) > R); r > 0 only for correctly classified samples.
    * ``robust/radius_median`` (``_<m>``): median radius over correctly
      classified samples (absent if none is correct).
    * ``robust/cert_violations``: (sample, attack) pairs certified at the
      attack budget but broken by it; > 0 proves tau underestimated.

    Attack settings, tau provenance, failures and curves are not scalars:
    they go to :attr:`report` (written by the loop as ``robustness.json``,
    ``.md``, ``.png``).

    Args:
        worst_case (str | dict, optional): None (off), ``'auto'`` (every
            FGM/PGD pair at the same label and budget, named
            ``worst_<label>@<eps>``) or ``{name: [member names]}``.
            Costs no model call. Defaults to None.
        collect_device (str): ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): Defaults to None (``'robust'``).
        collect_dir (str, optional): see ``BaseMetric``. Defaults to None.

    Example:
        >>> test_evaluator = [dict(type='AccMetric'),
        ...                   dict(type='RobustAccMetric',
        ...                        worst_case='auto')]
    """

    default_prefix = 'robust'

    def __init__(self, worst_case: Union[None, str, Dict[str, Sequence[str]]]
                 = None, collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix,
                         collect_dir=collect_dir)
        if not (worst_case is None or worst_case == 'auto' or
                isinstance(worst_case, dict)):
            raise ValueError("worst_case must be None, 'auto' or a dict "
                             f'{{name: [members]}}, got {worst_case!r}')
        if isinstance(worst_case, dict):
            for name, members in worst_case.items():
                if not isinstance(members, (list, tuple)) or \
                        len(members) < 2:
                    raise ValueError(
                        f'worst_case[{name!r}] must list >= 2 perturbation '
                        f'names, got {members!r}')
        self.worst_case = worst_case
        # Set by the robust loop: bind() once, begin() per evaluation.
        self.perturbations: Optional[List[dict]] = None
        self.modalities: Tuple[str, ...] = ()
        self.radii: Optional[List[float]] = None
        self.groups: List[dict] = []
        self.context: Optional[dict] = None
        self.report: Optional[dict] = None
        self._warned_unbound = False

    # ---- set-up by the robust loop ---------------------------------------

    def bind(self, perturbations: List[dict], modalities: Sequence[str],
             radii: Optional[Sequence[float]]) -> None:
        """Fix the evaluated perturbations (descriptions from the loop).

        Raises:
            ValueError: a name shadows a metric name, or ``worst_case``
                names an unknown member or clashes with a perturbation.
        """
        names = [p['name'] for p in perturbations]
        for name in names:
            if name.startswith(RESERVED):
                raise ValueError(
                    f'perturbation name {name!r} clashes with the metric '
                    f'names (reserved prefixes {RESERVED}); rename it')
        self.perturbations = list(perturbations)
        self.modalities = tuple(modalities)
        self.radii = None if radii is None else [float(r) for r in radii]
        self.groups = self._worst_groups({p['name']: p
                                          for p in perturbations})
        clash = sorted({g['name'] for g in self.groups} & set(names))
        if clash:
            raise ValueError(f'worst_case names {clash} clash with '
                             'perturbation names; rename them')

    def _worst_groups(self, by_name: Dict[str, dict]) -> List[dict]:
        if self.worst_case is None:
            return []
        if self.worst_case == 'auto':
            points: Dict[tuple, List[str]] = {}
            for p in by_name.values():
                if p['kind'] in ('fgm', 'pgd') and p['budget'] is not None:
                    points.setdefault((p['label'], p['budget'], p['unit']),
                                      []).append(p['name'])
            spec = {}
            for (label, budget, unit), members in points.items():
                if len(members) > 1:
                    suffix = '_raw' if unit == 'raw' else ''
                    spec[f'worst_{label}@{format_value(budget)}{suffix}'] = \
                        members
        else:
            spec = self.worst_case
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
            points = {(d['label'], d['budget'], d['unit']) for d in descs}
            if len(points) == 1 and all(d['kind'] in ('fgm', 'pgd')
                                        for d in descs):
                label, budget, unit = points.pop()
                suffix = '_raw' if unit == 'raw' else ''
                group.update(curve=f'worst_{label}{suffix}', budget=budget,
                             unit=unit, label=label,
                             group=descs[0].get('group'))
            groups.append(group)
        return groups

    def begin(self, context: Optional[dict]) -> None:
        """Start one evaluation; None = no robust part this time."""
        self.context = context
        self.report = None
        self.results.clear()

    # ---- BaseMetric ------------------------------------------------------

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Append the robust record of every sample (plain CPU values)."""
        if self.context is None:
            return
        for sample in data_samples:
            record = sample.get(RECORD_FIELD)
            if record is None:
                raise KeyError(
                    f'data sample without {RECORD_FIELD!r}: RobustAccMetric '
                    'needs RobustValLoop/RobustTestLoop')
            self.results.append(record)

    def evaluate(self, size: int) -> dict:
        """Like ``BaseMetric.evaluate``; ``{}`` without a robust part.

        The decision is the same on every rank (set by the loop), so the
        skipped collection cannot leave a rank waiting.
        """
        if self.context is None:
            if self.perturbations is None and not self._warned_unbound:
                print_log(
                    'RobustAccMetric reports nothing: use it with '
                    "test_cfg/val_cfg type='RobustTestLoop'/'RobustValLoop'",
                    logger='current', level=logging.WARNING)
                self._warned_unbound = True
            self.results.clear()
            return {}
        return super().evaluate(size)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Scalars for the logger; the full picture goes to :attr:`report`."""
        labels = np.array([r['label'] for r in results], dtype=np.int64)
        n = len(results)
        sections = ('certification', 'clamp_ranges')
        run = {k: v for k, v in self.context.items() if k not in sections}
        report = dict(format=REPORT_FORMAT,
                      run=dict(run, num_samples=n, metric_prefix=self.prefix),
                      clamp_ranges=self.context.get('clamp_ranges'),
                      perturbations=[], worst_case=[], curves={},
                      certification=dict(self.context['certification']),
                      metrics={})
        self.report = report
        if n == 0:
            report['run']['status'] = 'no samples'
            return {}

        correct = {'clean': self._column(results, 'clean') == labels}
        metrics = {'clean': float(correct['clean'].mean())}
        for desc in self.perturbations:
            entry = dict(desc, status='ok', accuracy=None, error=None)
            column = [r['preds'][desc['name']] for r in results]
            done = [v for v in column if v is not None]
            if len(done) < n:
                entry.update(status='failed', evaluated_samples=len(done),
                             error=self._error(results, desc['name']))
            else:
                correct[desc['name']] = np.array(column) == labels
                entry['accuracy'] = metrics[desc['name']] = float(
                    correct[desc['name']].mean())
            report['perturbations'].append(entry)
        for group in self.groups:
            entry = dict(group, status='ok', accuracy=None, error=None)
            broken = [m for m in group['members'] if m not in correct]
            if broken:
                entry.update(status='failed',
                             error=f'members failed: {broken}')
            else:
                hits = np.logical_and.reduce(
                    [correct[m] for m in group['members']])
                correct[group['name']] = hits
                entry['accuracy'] = metrics[group['name']] = float(
                    hits.mean())
            report['worst_case'].append(entry)

        report['curves'] = self._curves(report, metrics)
        for curve, data in report['curves'].items():
            if data['auc'] is not None:
                metrics[f'auc_{curve}'] = data['auc']
        if report['certification']['status'] == 'on':
            metrics.update(self._certify(results, correct, report))
        report['metrics'] = {f'{self.prefix}/{k}' if self.prefix else k: v
                             for k, v in metrics.items()}
        return metrics

    # ---- helpers ---------------------------------------------------------

    @staticmethod
    def _column(results: list, name: str) -> np.ndarray:
        return np.array([r['preds'][name] for r in results])

    @staticmethod
    def _error(results: list, name: str) -> str:
        for r in results:
            message = r.get('failed', {}).get(name)
            if message is not None:
                return message
        return 'unknown error'

    def _curves(self, report: dict, metrics: Dict[str, float]) -> dict:
        """Accuracy vs budget per curve, the clean accuracy at budget 0."""
        curves: Dict[str, dict] = {}
        for entry in report['perturbations'] + report['worst_case']:
            if entry.get('curve') is None or entry['accuracy'] is None:
                continue
            curve = curves.setdefault(entry['curve'], dict(
                kind=entry['kind'], label=entry['label'],
                group=entry.get('group', 'joint'), unit=entry['unit'],
                x='sigma' if entry['kind'] == 'noise' else 'eps',
                points={}))
            curve['points'][float(entry['budget'])] = entry['accuracy']
        for curve in curves.values():
            points = curve.pop('points')
            points.setdefault(0.0, metrics['clean'])
            budgets = sorted(points)
            accuracy = [points[b] for b in budgets]
            curve.update(budgets=budgets, accuracy=accuracy, auc=None)
            if len(budgets) >= 3:  # 0 and >= 2 positive budgets
                curve['auc'] = float(
                    np.trapezoid(accuracy, budgets) / budgets[-1])
        return curves

    def _certify(self, results: list, correct: Dict[str, np.ndarray],
                 report: dict) -> Dict[str, float]:
        """Certified accuracies, median radii and the violation check."""
        radius = np.array([r['radius'] for r in results], dtype=np.float64)
        per_modality = {m: np.array([r['modality_radii'][m] for r in results],
                                    dtype=np.float64)
                        for m in self.modalities}
        metrics, section = {}, report['certification']
        section['certified'] = {}
        section['radius_median'] = {}
        for key, values in [('', radius)] + [(f'_{m}', v) for m, v in
                                              per_modality.items()]:
            accuracy = [float((values > r).mean()) for r in self.radii]
            section['certified'][key.lstrip('_') or 'joint'] = accuracy
            for r, acc in zip(self.radii, accuracy):
                metrics[f'certified{key}@{format_value(r)}'] = acc
            positive = values[values > 0]
            median = float(np.median(positive)) if positive.size else None
            section['radius_median'][key.lstrip('_') or 'joint'] = median
            if median is not None:
                metrics[f'radius_median{key}'] = median
        section['radius_units'] = 'normalised input space, L2'
        violations = self._violations(radius, per_modality, correct)
        section['violations'] = violations
        if violations['checked']:
            metrics['cert_violations'] = violations['total']
            if violations['total']:
                print_log(
                    f'{violations["total"]} (sample, attack) pairs were '
                    'certified at the attack budget yet broken by the '
                    'attack: tau is underestimated, the certificates are '
                    f'not valid bounds ({violations["by_attack"]})',
                    logger='current', level=logging.WARNING)
        return metrics

    def _violations(self, radius: np.ndarray,
                    per_modality: Dict[str, np.ndarray],
                    correct: Dict[str, np.ndarray]) -> dict:
        """Samples with r > budget that an attack within the budget broke.

        A uni-modal attack is checked against r^(m), any other L2 attack
        against the joint r with its joint budget sqrt(sum eps_m^2); only
        budgets in the normalised space (the radii's units) are comparable.
        """
        by_attack = {}
        entries = self.perturbations + self.groups
        for entry in entries:
            if entry['name'] not in correct or entry['unit'] != 'normalized':
                continue
            budget = _joint_budget(entry)
            if budget is None:
                continue
            mods = entry['modalities']
            bound = per_modality[mods[0]] if mods and len(mods) == 1 \
                else radius
            broken = (bound > budget) & ~correct[entry['name']]
            by_attack[entry['name']] = int(broken.sum())
        return dict(checked=sorted(by_attack), by_attack=by_attack,
                    total=int(sum(by_attack.values())))


def _joint_budget(entry: dict) -> Optional[float]:
    """Joint L2 budget of an attack entry (None if not an L2 attack)."""
    if entry['kind'] == 'worst':
        return entry['budget']
    if entry['kind'] not in ('fgm', 'pgd'):
        return None
    eps = entry['settings']['eps']
    if isinstance(eps, numbers.Real):
        return float(eps)
    return math.sqrt(sum(float(v) ** 2 for v in eps.values()))
