"""The ``smoothing`` option of the robust evaluation: sound certificates of
the smoothed classifier next to CRMT's empirical radii.

One entry of ``smoothing`` is a :class:`~crmt_mm.certification.smoothing.
GaussianSmoothingCertifier` config plus three evaluation keys
(:data:`ENTRY_KEYS`)::

    smoothing=[dict(type='GaussianSmoothingCertifier', modality='audio',
                    sigma=0.25, n0=64, n=512, alpha=0.001,
                    subset=dict(size=64, seed=0),   # None = every sample
                    radii=None,           # R of the table, default below
                    check_attacks=True)]  # attack the smoothed classifier

:class:`SmoothingRun` certifies the samples of a batch that belong to the
seeded subset (chosen by dataset index, so every rank picks the same
samples) and, with ``check_attacks``, evaluates the smoothed classifier
with PREDICT on the base model's adversarial examples within the certified
radius (:meth:`SmoothingRun.process`). Its per-sample results go into the
robust record under ``'smoothing'``; :func:`summarize_smoothing` turns the
gathered records into the report's ``smoothing`` section: certified
accuracy vs radius, abstention rate, the violation count and the
per-sample bracket (sound radius, smallest breaking budget of the base
model, CRMT's empirical r^(m)(x)). The maths is in
``docs/certification.md``.
"""
import math
import numbers
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmaction.registry import TASK_UTILS

from crmt_mm.attacks.base import budget_norm, entry_error, format_value

#: Keys of a ``smoothing`` entry read by the evaluation (the others build
#: the certifier).
ENTRY_KEYS = ('subset', 'radii', 'check_attacks')
#: Record field of the smoothing results of one sample.
SMOOTHING_FIELD = 'smoothing'
#: Label of CRMT's radii next to the smoothing certificates.
EMPIRICAL_LABEL = 'empirical (τ estimate)'


def smoothing_subset(dataset_size: int, size: Optional[int],
                     seed: int = 0) -> frozenset:
    """Dataset indices certified: ``size`` of ``range(dataset_size)``
    drawn without replacement by ``numpy.random.default_rng(seed)``, or
    all of them when ``size`` is None or >= ``dataset_size``."""
    if size is None or size >= dataset_size:
        return frozenset(range(dataset_size))
    rng = np.random.default_rng(seed)
    return frozenset(int(i) for i in rng.choice(dataset_size, size,
                                                replace=False))


def l2_budget(desc: dict) -> Optional[float]:
    """Joint L2 budget in the normalised space of a perturbation's
    ``describe()`` (``sqrt(sum eps_m^2)`` for per-modality balls), or None
    when it is not an L2 attack with a normalised budget."""
    if budget_norm(desc) != 'L2' or desc.get('unit') != 'normalized':
        return None
    eps = desc['settings'].get('eps', desc.get('budget'))
    if eps is None:
        return None
    if isinstance(eps, numbers.Real):
        return float(eps)
    return math.sqrt(sum(float(v) ** 2 for v in eps.values()))


def _uni_modal(desc: dict) -> Optional[str]:
    mods = desc.get('modalities')
    return mods[0] if mods and len(mods) == 1 else None


class SmoothingRun:
    """One ``smoothing`` entry inside a robust evaluation.

    Args:
        entry (dict): a ``GaussianSmoothingCertifier`` config plus
            ``subset`` (None or ``dict(size=N, seed=S)``: the seeded
            choice of :func:`smoothing_subset`; defaults to None, every
            sample), ``radii`` (R of the certified-accuracy table; defaults
            to 0 plus the normalised L2 budgets of the evaluated attacks
            the certificate covers) and ``check_attacks`` (bool; defaults to
            True).
        descriptions (list[dict]): ``describe()`` of the evaluation's
            perturbations.
        modalities (Sequence[str]): the model's modalities.
        where (str): the config key, for messages. Defaults to
            ``'smoothing[0]'``.

    Example:
        >>> test_cfg = dict(type='RobustTestLoop', perturbations=[...],
        ...     smoothing=[dict(type='GaussianSmoothingCertifier',
        ...                     modality='audio', sigma=0.25,
        ...                     subset=dict(size=64, seed=0))])
    """

    def __init__(self, entry: dict, descriptions: List[dict],
                 modalities: Sequence[str],
                 where: str = 'smoothing[0]') -> None:
        if not isinstance(entry, dict) or 'type' not in entry:
            raise ValueError(f'{where} must be a dict with a type (e.g. '
                             "type='GaussianSmoothingCertifier'), got "
                             f'{entry!r}')
        entry = dict(entry)
        subset = entry.pop('subset', None)
        radii = entry.pop('radii', None)
        check = entry.pop('check_attacks', True)
        try:
            self.certifier = TASK_UTILS.build(entry)
            self.certifier.check_modalities(modalities)
        except (ValueError, TypeError) as err:
            raise entry_error(err, where, entry) from err
        self.name = self.certifier.name
        self.subset = self._check_subset(subset, where)
        if not isinstance(check, bool):
            raise ValueError(f'{where}.check_attacks must be True or False, '
                             f'got {check!r}')
        self.check_attacks = check
        #: Names of the attacks whose budget this certificate bounds, with
        #: their L2 budgets (uni-modal: attacks on that modality only).
        self.attacks = {d['name']: l2_budget(d) for d in descriptions
                        if self._covers(d)}
        self.radii = self._check_radii(radii, where)
        self._chosen: Optional[frozenset] = None

    @staticmethod
    def _check_subset(subset, where: str) -> Optional[dict]:
        if subset is None:
            return None
        if not isinstance(subset, dict) or set(subset) - {'size', 'seed'} \
                or 'size' not in subset:
            raise ValueError(f'{where}.subset must be None or dict(size=N, '
                             f'seed=S), got {subset!r}')
        size, seed = subset['size'], subset.get('seed', 0)
        for key, value, low in (('size', size, 1), ('seed', seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    value < low:
                raise ValueError(f'{where}.subset.{key} must be an int >= '
                                 f'{low}, got {value!r}')
        return dict(size=size, seed=seed)

    def _covers(self, desc: dict) -> bool:
        if l2_budget(desc) is None:
            return False
        scope = self.certifier.modality
        return scope is None or _uni_modal(desc) == scope

    def _check_radii(self, radii, where: str) -> List[float]:
        if radii is None:
            radii = [0.0] + list(self.attacks.values())
        elif not isinstance(radii, (list, tuple)) or not radii or any(
                isinstance(r, bool) or not isinstance(r, numbers.Real) or
                not math.isfinite(r) or r < 0 for r in radii):
            raise ValueError(f'{where}.radii must be a non-empty list of '
                             f'finite radii >= 0, got {radii!r}')
        return sorted({float(r) for r in radii})

    def describe(self) -> dict:
        """The certifier's ``describe()`` plus the evaluation settings."""
        return dict(self.certifier.describe(), subset=self.subset,
                    radii=self.radii, check_attacks=self.check_attacks,
                    checked_attacks=sorted(self.attacks)
                    if self.check_attacks else [],
                    attack_budgets=dict(self.attacks))

    # ---- one evaluation --------------------------------------------------

    def begin(self, dataset_size: Optional[int]) -> None:
        """Fix the certified dataset indices of this evaluation."""
        if self.subset is None:
            self._chosen = None
            return
        if dataset_size is None:
            raise ValueError(f'{self.name}: subset needs the dataset size; '
                             'the driver must pass num_samples to begin()')
        self._chosen = smoothing_subset(dataset_size, self.subset['size'],
                                        self.subset['seed'])

    def process(self, forward, x: Dict[str, torch.Tensor], y: torch.Tensor,
                sample_idx: List[int], perturbations: Sequence,
                spaces) -> List[Optional[dict]]:
        """Certify the batch's subset samples; attack the certified ones.

        For every sample certified with class c and radius R and every
        covered attack with budget eps < R, the attack is run on the base
        model (``perturb``, on those samples only, with the true labels)
        and PREDICT evaluates the smoothed classifier at the result;
        ``checks[attack]`` holds PREDICT's class (-1 = abstain). A class
        other than c and -1 is a violation of the certificate.

        Returns:
            list[dict | None]: per sample the certificate's record plus
            ``checks``, or None outside the subset.
        """
        keep = [i for i, s in enumerate(sample_idx)
                if self._chosen is None or s in self._chosen]
        out: List[Optional[dict]] = [None] * len(sample_idx)
        if not keep:
            return out
        where = torch.tensor(keep, device=y.device)
        xs = {m: t.index_select(0, where) for m, t in x.items()}
        ys = y.index_select(0, where)
        ids = [sample_idx[i] for i in keep]
        cert = self.certifier.certify(forward, xs, ids)
        records = cert.records()
        scope_radius = cert.radius if self.certifier.modality is None \
            else cert.modality_radii[self.certifier.modality]
        for record in records:
            record['checks'] = {}
        if self.check_attacks:
            for p in perturbations:
                budget = self.attacks.get(p.name)
                if budget is None or not p.acts_on_inputs:
                    continue
                rows = [j for j, r in enumerate(records)
                        if r['prediction'] >= 0 and
                        budget < float(scope_radius[j])]
                if not rows:
                    continue
                sel = torch.tensor(rows, device=y.device)
                xa = {m: t.index_select(0, sel) for m, t in xs.items()}
                with torch.enable_grad():
                    adv = p.perturb(forward, xa, ys.index_select(0, sel),
                                    spaces)
                smoothed = self.certifier.predict(
                    forward, {m: t.detach() for m, t in adv.items()},
                    [ids[j] for j in rows])
                for j, c in zip(rows, smoothed.prediction.tolist()):
                    records[j]['checks'][p.name] = c
        for i, record in zip(keep, records):
            out[i] = record
        return out


# ---------------------------------------------------------------- summaries
def _break_budget(record: dict, attacks: Dict[str, float]) -> float:
    """Smallest covered budget whose attack broke the base model (0 if it
    is wrong on the clean input, inf if no attack broke it)."""
    label = record['label']
    if record['preds']['clean'] != label:
        return 0.0
    broken = [eps for name, eps in attacks.items()
              if record['preds'].get(name) is not None and
              record['preds'][name] != label]
    return min(broken) if broken else math.inf


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(values)) if values else None


def summarize_smoothing(records: List[dict], entries: List[dict]
                        ) -> List[dict]:
    """The report's ``smoothing`` section from the gathered records.

    Args:
        records (list[dict]): robust records; those certified by an entry
            hold ``record['smoothing'][name]``.
        entries (list[dict]): :meth:`SmoothingRun.describe` of each entry
            (``name``, ``scope``, ``radii``, ``label``, ``checked_attacks``
            and, for the bracket, ``attack_budgets``).

    Returns:
        list[dict]: per entry ``name``, ``label``, ``settings``,
        ``num_samples`` (certified samples), ``radii``, ``certified``
        (fraction with the correct smoothed class and radius > R),
        ``curve`` (certified accuracy at every distinct radius: the exact
        step function), ``smoothed_accuracy``, ``abstention_rate``,
        ``violations`` and ``bracket``.
    """
    out = []
    for entry in entries:
        name, scope = entry['name'], entry['scope']
        rows = [r for r in records
                if (r.get(SMOOTHING_FIELD) or {}).get(name) is not None]
        certs = [r[SMOOTHING_FIELD][name] for r in rows]
        labels = np.array([r['label'] for r in rows], dtype=np.int64)
        pred = np.array([c['prediction'] for c in certs], dtype=np.int64)
        radius = np.array([c['radius'] if scope == 'joint'
                           else c['modality_radii'][scope] for c in certs],
                          dtype=np.float64)
        correct = pred == labels
        n = len(rows)
        section = dict(
            name=name, label=entry['label'], scope=scope,
            settings={k: v for k, v in entry.items()
                      if k not in ('name', 'label', 'scope')},
            num_samples=n, radii=list(entry['radii']),
            certified=[float((correct & (radius > r)).mean()) if n else None
                       for r in entry['radii']],
            smoothed_accuracy=float(correct.mean()) if n else None,
            abstention_rate=float((pred < 0).mean()) if n else None,
            radius_median=_median(radius[correct].tolist()),
            curve=_curve(radius, correct))
        section['violations'] = _violations(certs)
        section['bracket'] = _bracket(rows, certs, correct, radius, scope,
                                      entry.get('attack_budgets', {}))
        out.append(section)
    return out


def _curve(radius: np.ndarray, correct: np.ndarray) -> dict:
    """Certified accuracy (correct and radius > R) at R = 0 and at every
    distinct radius of a correct sample: constant from each point to the
    next (a right-continuous step function, plotted ``steps-post``)."""
    n = radius.size
    points = [0.0] + sorted({float(r) for r in radius[correct] if r > 0})
    return dict(radius=points, accuracy=[
        float((correct & (radius > r)).sum() / n) if n else 0.0
        for r in points])


def _violations(certs: List[dict]) -> dict:
    """(sample, attack) pairs checked against the sound bound."""
    by_attack: Dict[str, dict] = {}
    for c in certs:
        for attack, smoothed in c.get('checks', {}).items():
            stats = by_attack.setdefault(attack, dict(
                checked=0, abstained=0, same=0, violations=0))
            stats['checked'] += 1
            if smoothed < 0:
                stats['abstained'] += 1
            elif smoothed == c['prediction']:
                stats['same'] += 1
            else:
                stats['violations'] += 1
    return dict(
        what='pairs (certified sample, covered attack with budget eps < '
        'certified radius R): PREDICT of the smoothed classifier at the '
        "base model's adversarial example; a class other than the certified "
        'one (not an abstention) is a violation',
        checked=sum(s['checked'] for s in by_attack.values()),
        abstained=sum(s['abstained'] for s in by_attack.values()),
        total=sum(s['violations'] for s in by_attack.values()),
        by_attack=by_attack)


def _bracket(rows, certs, correct, radius, scope: str,
             attack_budgets: Dict[str, float]) -> Optional[dict]:
    """Per-sample sound radius, attack budget and empirical r^(m)(x)."""
    if scope == 'joint':
        return None
    sound = np.where(correct, radius, 0.0)
    attack = [_break_budget(r, attack_budgets) if attack_budgets else None
              for r in rows]
    empirical = [r['modality_radii'][scope] if 'modality_radii' in r
                 else None for r in rows]

    def gaps(upper, lower):
        return [u - v for u, v in zip(upper, lower)
                if u is not None and v is not None and math.isfinite(u)
                and math.isfinite(v)]

    sound_l = sound.tolist()
    return dict(
        modality=scope,
        what=dict(
            sound='smoothing radius where the smoothed prediction is '
            'correct, else 0 (sound w.p. 1 - alpha, for the smoothed '
            'classifier)',
            attack='smallest budget of the uni-modal L2 attacks on this '
            'modality that broke the base model (0 if wrong clean, inf if '
            'none did; an upper bound for the base model)',
            empirical=f'CRMT r^(m)(x), {EMPIRICAL_LABEL}'),
        attacks=sorted(attack_budgets, key=attack_budgets.get),
        samples=[dict(label=r['label'], sound=s, attack=a, empirical=e)
                 for r, s, a, e in zip(rows, sound_l, attack, empirical)],
        median=dict(sound=_median(sound_l),
                    attack=_median(attack) if attack_budgets else None,
                    empirical=_median(empirical)),
        median_gap=dict(
            attack_minus_sound=_median(gaps(attack, sound_l)),
            empirical_minus_sound=_median(gaps(empirical, sound_l)),
            attack_minus_empirical=_median(gaps(attack, empirical))),
        sound_above_attack=sum(
            1 for s, a in zip(sound_l, attack)
            if a is not None and s > a))


def smoothing_scalars(sections: List[dict]) -> Dict[str, float]:
    """Logged metric names (without prefix) of the smoothing sections:
    ``<name>/certified@<R>``, ``<name>/abstain``, ``<name>/violations``."""
    metrics = {}
    for s in sections:
        if not s['num_samples']:
            continue
        for r, acc in zip(s['radii'], s['certified']):
            metrics[f'{s["name"]}/certified@{format_value(r)}'] = acc
        metrics[f'{s["name"]}/abstain'] = s['abstention_rate']
        if s['violations']['checked']:
            metrics[f'{s["name"]}/violations'] = s['violations']['total']
    return metrics
