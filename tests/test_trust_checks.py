"""Trust checks on constructed cases: zero gradients, a random forward,
non-monotone curves, a gradient-masked model that only Square breaks."""
import pytest
import torch
from torch import nn

from crmt_mm.attacks import MultiModalAutoAttack
from crmt_mm.evaluation.summary import summarize
from crmt_mm.evaluation.trust import (TRUST_DEFAULTS, check_trust,
                                      gradient_norms, trust_checks)
from helpers_eval import desc

SETTINGS = dict(TRUST_DEFAULTS, large={})


def _record(label, pred, ce=1.0, margin=1.0, diff=0.0, large=None):
    return dict(label=label, preds=dict(clean=pred, a=pred),
                trust=dict(grad=dict(ce=dict(audio=ce), margin=dict(
                    audio=margin)), forward_diff=diff, large=large or {}))


def _checks(records, descriptions=(), settings=SETTINGS):
    summary = summarize(records, list(descriptions) or [desc('a', 'pgd', 1.0)],
                        [], ['audio'], None)
    return trust_checks(records, summary, settings)


class Linear(nn.Module):
    def __init__(self, weight, masked=False, noisy=False):
        super().__init__()
        self.weight = weight
        self.masked, self.noisy = masked, noisy

    def forward(self, x, drop=()):
        v = x['audio'].flatten(1)
        if self.masked:  # a staircase: zero gradient almost everywhere
            v = torch.round(v * 2) / 2
        z = v @ self.weight
        if self.noisy:
            z = z + torch.randn_like(z)
        return z


def test_zero_gradient_model_fails_both_gradient_checks():
    x = {'audio': torch.randn(6, 4)}
    y = torch.zeros(6, dtype=torch.long)
    flat = Linear(torch.zeros(4, 3))
    norms = gradient_norms(flat, x, y)
    assert norms['ce']['audio'] == [0.0] * 6
    assert norms['margin']['audio'] == [0.0] * 6
    records = [_record(0, 0, ce=c, margin=m) for c, m in
               zip(norms['ce']['audio'], norms['margin']['audio'])]
    checks = _checks(records)['checks']
    assert checks['vanishing_gradient_ce_audio']['status'] == 'fail'
    assert checks['vanishing_gradient_ce_audio']['figure'] == 1.0
    assert checks['vanishing_gradient_margin_audio']['status'] == 'fail'


def test_gradient_norms_match_closed_form():
    w = torch.randn(4, 3)
    x = {'audio': torch.randn(5, 4)}
    y = torch.tensor([0, 1, 2, 0, 1])
    norms = gradient_norms(Linear(w), x, y)
    z = x['audio'] @ w
    p = z.softmax(1)
    expected = ((p - torch.nn.functional.one_hot(y, 3)) @ w.T).norm(dim=1)
    assert norms['ce']['audio'] == pytest.approx(expected.tolist(), rel=1e-5)
    other = z.clone()
    other[torch.arange(5), y] = -float('inf')
    j = other.argmax(1)
    margin = (w[:, y] - w[:, j]).T.norm(dim=1)
    assert norms['margin']['audio'] == pytest.approx(margin.tolist(),
                                                     rel=1e-5)


def test_random_forward_is_flagged():
    model = Linear(torch.randn(4, 3), noisy=True)
    x = {'audio': torch.randn(4, 4)}
    diff = (model(x) - model(x)).abs().amax(1).tolist()
    records = [_record(0, 0, diff=d) for d in diff]
    check = _checks(records)['checks']['deterministic_forward']
    assert check['status'] == 'fail' and check['figure'] == 4
    calm = _checks([_record(0, 0)] * 4)['checks']['deterministic_forward']
    assert calm['status'] == 'pass'


def test_non_monotone_curve_is_flagged():
    descriptions = [desc('p@1', 'pgd', 1.0), desc('p@2', 'pgd', 2.0)]
    # accuracy 0.5 at eps 1 and 1.0 at eps 2: not monotone
    records = [dict(label=0, preds={'clean': 0, 'p@1': 1, 'p@2': 0}),
               dict(label=0, preds={'clean': 0, 'p@1': 0, 'p@2': 0})]
    result = _checks(records, descriptions)
    check = result['checks']['monotone_in_eps']
    assert check['status'] == 'fail' and check['curves'] == ['pgd_audio']
    assert not result['passed']
    records[1]['preds']['p@2'] = 1
    records[0]['preds']['p@2'] = 1
    assert _checks(records, descriptions)['checks'][
        'monotone_in_eps']['status'] == 'pass'


def test_subsampled_curve_starts_from_its_own_clean_accuracy():
    """A curve evaluated on a subsample is compared with the clean accuracy
    of that subsample, not of every clip: all 2 subsampled clips correct at
    eps 1 and 2 is monotone although only half of all clips are clean-
    correct."""
    descriptions = [desc('p@1', 'pgd', 1.0), desc('p@2', 'pgd', 2.0)]
    records = [dict(label=0, preds={'clean': 0, 'p@1': 0, 'p@2': 0}),
               dict(label=0, preds={'clean': 0, 'p@1': 0, 'p@2': 0})] + [
        dict(label=0, preds={'clean': 1, 'p@1': None, 'p@2': None},
             skipped=['p@1', 'p@2']) for _ in range(2)]
    summary = summarize(records, descriptions, [], ['audio'], None)
    assert summary['accuracy']['clean'] == 0.5
    assert summary['curves']['pgd_audio']['accuracy'] == [1.0, 1.0, 1.0]
    assert [e['clean_accuracy_on_evaluated']
            for e in summary['perturbations']] == [1.0, 1.0]
    assert trust_checks(records, summary, SETTINGS)['checks'][
        'monotone_in_eps']['status'] == 'pass'


def test_large_budget_check():
    settings = dict(SETTINGS, large={'big': dict(label='audio')})
    broken = [_record(0, 0, large={'big': 1}) for _ in range(3)]
    assert _checks(broken, settings=settings)['checks'][
        'large_budget_big']['status'] == 'pass'
    kept = broken + [_record(0, 0, large={'big': 0})]
    check = _checks(kept, settings=settings)['checks']['large_budget_big']
    assert check['status'] == 'fail' and check['figure'] == 0.25


def test_masked_model_only_square_breaks_it():
    torch.manual_seed(0)
    w = torch.randn(16, 4)
    model = Linear(w, masked=True)
    x = {'audio': torch.randn(64, 16)}
    y = model(x).argmax(1)
    aa = MultiModalAutoAttack(eps=0.5, modality='audio', steps=5,
                              n_targets=2, queries=200)
    result = aa.run(model, x, y)
    # The gradient members see a zero gradient and only break what their
    # random start breaks; Square's search breaks more after them.
    assert int(result.gradient_free_only.sum()) >= 5
    record = [dict(label=int(t), preds={'clean': int(t),
                                        aa.name: int(p)},
                   ensemble={aa.name: dict(broken_by=b,
                                           gradient_free_only=bool(g))})
              for t, p, b, g in zip(y, result.logits.argmax(1),
                                    result.broken_by,
                                    result.gradient_free_only)]
    summary = summarize(record, [aa.describe()], [], ['audio'], None)
    check = trust_checks(record, summary, SETTINGS)['checks'][
        'gradient_free_only']
    assert check['status'] == 'fail'
    assert check['figure'] == int(result.gradient_free_only.sum())


def test_check_trust_arguments():
    assert check_trust(None) is None and check_trust(False) is None
    assert check_trust(True) == TRUST_DEFAULTS
    with pytest.raises(ValueError, match='large_factor'):
        check_trust(dict(large_factor=0))
    with pytest.raises(ValueError, match='large_steps must be an int'):
        check_trust(dict(large_steps=2.5))
