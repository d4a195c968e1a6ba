"""RobustAccMetric and the record summary: accuracies, worst case, curves,
AUC, failures, certified accuracy and the certificate check."""
import pytest

from crmt_mm.evaluation import RobustAccMetric
from crmt_mm.evaluation.summary import summarize, worst_case_groups
from helpers_eval import desc, records

CURVE = [desc('pgd_audio@0.5', 'pgd', 0.5), desc('pgd_audio@1.0', 'pgd', 1.0),
         desc('fgm_audio@0.5', 'fgm', 0.5), desc('missing_audio', 'missing')]


def curve_records():
    results = records([0, 1, 2, 3],
                      clean=[0, 1, 2, 0],
                      **{'pgd_audio@0.5': [0, 1, 0, 0],
                         'pgd_audio@1.0': [0, 0, 0, 0],
                         'fgm_audio@0.5': [0, 0, 2, 0],
                         'missing_audio': [0, 1, None, None]})
    results[2]['failed'] = {'missing_audio': 'ValueError: x'}
    return results


def test_metric_curves_worst_case_and_failures():
    metric = RobustAccMetric(worst_case='auto')
    metric.bind(CURVE, ('visual', 'audio'), None)
    metric.begin(True)
    results = curve_records()
    metrics = metric.compute_metrics(results)
    assert metric.records == results  # kept for the report builder
    assert RobustAccMetric().evaluate(4) == {}  # without a robust loop
    assert metrics['clean'] == 0.75
    assert metrics['pgd_audio@0.5'] == 0.5
    assert metrics['worst_audio@0.5'] == 0.25  # only sample 0 survives both
    # Trapezoid over (0, .75), (.5, .5), (1, .25), divided by 1.
    assert metrics['auc_pgd_audio'] == pytest.approx(0.5)
    assert 'auc_fgm_audio' not in metrics  # one budget is not a curve
    assert 'missing_audio' not in metrics
    summary = summarize(results, CURVE, metric.groups, ('audio',), None)
    entry = summary['perturbations'][3]
    assert (entry['status'], entry['error']) == ('failed', 'ValueError: x')
    assert entry['evaluated_samples'] == 2
    assert metric.compute_metrics([]) == {}

    with pytest.raises(ValueError, match='clashes'):
        metric.bind([desc('clean', 'pgd', 0.5)], ('audio',), None)


def test_metric_arguments_and_groups():
    with pytest.raises(ValueError, match='worst_case'):
        RobustAccMetric(worst_case='all')
    with pytest.raises(ValueError, match='>= 2 perturbation'):
        RobustAccMetric(worst_case=dict(w=['a']))
    groups = worst_case_groups(dict(w=['pgd_audio@0.5', 'fgm_audio@0.5']),
                               CURVE)
    assert groups[0]['curve'] == 'worst_audio'  # one budget: a curve point
    with pytest.raises(ValueError, match="unknown perturbations \\['nope'\\]"):
        worst_case_groups(dict(w=['pgd_audio@0.5', 'nope']), CURVE)
    with pytest.raises(ValueError, match='clash'):
        worst_case_groups(dict(missing_audio=['pgd_audio@0.5',
                                              'fgm_audio@0.5']), CURVE)


def test_metric_certificate_violations():
    metric = RobustAccMetric()
    metric.bind([desc('pgd_audio@0.5', 'pgd', 0.5)], ('audio',), [0.0, 0.5])
    metric.begin(True, certified=True)
    results = records([0, 0, 0], clean=[0, 0, 1],
                      **{'pgd_audio@0.5': [0, 1, 1]})
    # Sample 1 is certified at 0.6 > 0.5 for audio, yet the attack broke it.
    for r, (joint, audio) in zip(results, [(0.2, 0.7), (0.3, 0.6),
                                           (-1.0, -1.0)]):
        r.update(radius=joint, modality_radii=dict(audio=audio))
    metrics = metric.compute_metrics(results)
    assert metrics['cert_violations'] == 1
    assert metrics['certified@0.0'] == pytest.approx(2 / 3)
    assert metrics['certified_audio@0.5'] == pytest.approx(2 / 3)
    assert metrics['radius_median'] == pytest.approx(0.25)
    # Radii bound but not in the records (certification skipped): none.
    metric.begin(True, certified=False)
    assert not any(k.startswith('certified')
                   for k in metric.compute_metrics(results))
