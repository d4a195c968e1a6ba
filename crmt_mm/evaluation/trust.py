"""Trust checks: signs that an attack evaluation over-reports robustness.

Empirical robust accuracy is an upper bound that a weak or fooled attack
inflates. Following the sanity checks recommended with AutoAttack (Croce &
Hein, ICML 2020) and by Carlini et al. (2019, "On evaluating adversarial
robustness"), the robust evaluator measures per clip, at clean inputs,

* the L2 norm of the input gradient of the cross-entropy and of the margin
  loss z_y - max_{i != y} z_i, per modality (a vanishing CE gradient is
  float32 softmax saturation, where CE-only attacks under-report; a
  vanishing margin gradient is gradient masking);
* the largest absolute difference of the fused logits between two clean
  passes (randomness in the forward pass breaks attacks that assume a
  fixed function);
* the prediction under APGD-CE at a large budget (by default 8x the largest
  configured one): a working attack brings accuracy to about 0 there;

and :func:`trust_checks` turns these, the ensembles' gradient-free-only
breaks and the accuracy curves into pass/fail checks with their figures.
"""
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Accepted keys of the evaluator's ``trust`` option and their defaults.
TRUST_DEFAULTS = dict(vanishing=1e-6, max_vanishing_fraction=0.05,
                      large_factor=8.0, large_steps=20,
                      large_max_accuracy=0.01, forward_tol=1e-5)


def check_trust(trust) -> Optional[dict]:
    """The trust settings: None/False = off, True or a dict = on.

    Raises:
        ValueError: unknown keys or non-positive values.
    """
    if trust is None or trust is False:
        return None
    if trust is True:
        trust = {}
    if not isinstance(trust, dict):
        raise ValueError(f'trust must be None, a bool or a dict, got '
                         f'{trust!r}')
    unknown = sorted(set(trust) - set(TRUST_DEFAULTS))
    if unknown:
        raise ValueError(f'trust: unknown keys {unknown}; accepted: '
                         f'{list(TRUST_DEFAULTS)}')
    out = dict(TRUST_DEFAULTS, **trust)
    for key, value in out.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value < 0 or (key in ('large_factor', 'large_steps')
                                 and value <= 0):
            raise ValueError(f'trust.{key} must be a positive number, got '
                             f'{value!r}')
    if isinstance(out['large_steps'], float):
        raise ValueError('trust.large_steps must be an int')
    return out


def gradient_norms(forward, x: Dict[str, Tensor], y: Tensor
                   ) -> Dict[str, Dict[str, List[float]]]:
    """Per clip and modality, the L2 norm of the clean input gradient.

    Args:
        forward (callable): ``forward(x) -> [B, K]`` fused logits.
        x (dict[str, Tensor]): normalised inputs, batch first.
        y (Tensor): labels ``[B]``.

    Returns:
        dict: ``{'ce': {m: [B floats]}, 'margin': {m: [B floats]}}``; the
        losses are summed over the batch, so each clip's gradient is its
        own loss's.
    """
    names = sorted(x)
    with torch.enable_grad():
        inputs = {m: x[m].detach().requires_grad_(True) for m in names}
        z = forward(inputs)
        ce = F.cross_entropy(z, y, reduction='sum')
        true = z.gather(1, y[:, None]).squeeze(1)
        other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(),
                              float('-inf')).amax(1)
        margin = (true - other).sum()
        out = {}
        for loss_name, loss in (('ce', ce), ('margin', margin)):
            grads = torch.autograd.grad(loss, [inputs[m] for m in names],
                                        retain_graph=loss_name == 'ce',
                                        allow_unused=True)
            out[loss_name] = {
                m: ([0.0] * y.shape[0] if g is None else
                    g.flatten(1).norm(dim=1).tolist())
                for m, g in zip(names, grads)}
    return out


def _check(passed: bool, figure, criterion: str, **extra) -> dict:
    return dict(status='pass' if passed else 'fail', figure=figure,
                criterion=criterion, **extra)


def trust_checks(records: List[dict], summary: dict,
                 settings: dict) -> dict:
    """The ``trust`` section of a report.

    Args:
        records (list[dict]): robust records (with their ``trust`` and
            ``ensemble`` fields).
        summary (dict): :func:`~crmt_mm.evaluation.summary.summarize` of
            the same records (curves, perturbations).
        settings (dict): the checked ``trust`` settings
            (:data:`TRUST_DEFAULTS` keys) and ``large`` (``{name:
            description}`` of the large-budget attacks).

    Returns:
        dict: ``settings``, ``checks`` (``{name: {status, figure,
        criterion, ...}}``), ``passed`` (all checks pass).
    """
    with_trust = [r for r in records if 'trust' in r]
    checks: Dict[str, dict] = {}
    thr, limit = settings['vanishing'], settings['max_vanishing_fraction']
    if with_trust:
        for loss in ('ce', 'margin'):
            norms = {m: np.array([r['trust']['grad'][loss][m]
                                  for r in with_trust])
                     for m in with_trust[0]['trust']['grad'][loss]}
            for m, values in norms.items():
                frac = float((values < thr).mean())
                checks[f'vanishing_gradient_{loss}_{m}'] = _check(
                    frac <= limit, frac,
                    f'fraction of clean clips with L2 norm of the {loss} '
                    f'input gradient w.r.t. {m} < {thr:g} is <= {limit:g}',
                    samples=len(values), median=float(np.median(values)))
        diffs = np.array([r['trust']['forward_diff'] for r in with_trust])
        changed = int((diffs > settings['forward_tol']).sum())
        checks['deterministic_forward'] = _check(
            changed == 0, changed,
            'clips whose fused logits differ by more than '
            f'{settings["forward_tol"]:g} between two clean passes is 0',
            samples=len(diffs), max_difference=float(diffs.max()))
        for name, desc in settings.get('large', {}).items():
            preds = [(r['trust']['large'][name], r['label'])
                     for r in with_trust
                     if r['trust']['large'].get(name) is not None]
            acc = float(np.mean([p == t for p, t in preds])) if preds \
                else None
            checks[f'large_budget_{name}'] = _check(
                acc is not None and acc <= settings['large_max_accuracy'],
                acc, f'accuracy under {name} ({settings["large_factor"]:g}x '
                'the largest configured budget of '
                f'{desc["label"]}) is <= {settings["large_max_accuracy"]:g}',
                samples=len(preds))
    ensembles = [p['name'] for p in summary['perturbations']
                 if p['type'] == 'MultiModalAutoAttack']
    if ensembles:
        found = [dict(sample=i, perturbation=name)
                 for i, r in enumerate(records)
                 for name, e in r.get('ensemble', {}).items()
                 if e['gradient_free_only']]
        checks['gradient_free_only'] = _check(
            not found, len(found),
            'no clip is broken by the gradient-free attack (Square) after '
            'every gradient attack failed on it (gradient masking)',
            cases=found[:20])
    bad = []
    for curve, data in summary['curves'].items():
        if data['kind'] == 'weakest':
            # Left out so that the weakest-modality records change no
            # existing check; the members' own curves are checked.
            continue
        acc = data['accuracy']
        if any(b > a for a, b in zip(acc, acc[1:])):
            bad.append(curve)
    checks['monotone_in_eps'] = _check(
        not bad, len(bad), 'accuracy is non-increasing in the budget on '
        "every curve (at 0 the clean accuracy on the curve's clips)",
        curves=bad)
    return dict(settings={k: v for k, v in settings.items() if k != 'large'},
                checks=checks,
                passed=all(c['status'] == 'pass' for c in checks.values()))
