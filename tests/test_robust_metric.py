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


# ---- weakest modality ------------------------------------------------------

def udesc(name, kind, budget, modality, norm='L2', unit='normalized'):
    """A budgeted attack on ``modality`` (None: joint), as describe() gives."""
    label = modality or 'joint'
    return dict(name=name, type='T', kind=kind,
                modalities=None if modality is None else [modality],
                label=label, budget=budget, unit=unit,
                curve=f'{kind}_{label}', group=modality or 'joint',
                settings=dict(eps=budget, norm=norm))


WEAK = [
    udesc('pgd_audio@0.5', 'pgd', 0.5, 'audio'),
    udesc('fgm_audio@0.5', 'fgm', 0.5, 'audio'),
    udesc('pgd_visual@0.5', 'pgd', 0.5, 'visual'),
    udesc('pgd_audio@1.0', 'pgd', 1.0, 'audio'),
    # An ensemble on visual at 1.0 (a WorstCase: kind 'worst', norm only).
    dict(udesc('wc_visual@1.0', 'worst', 1.0, 'visual'),
         settings=dict(members=['a', 'b'], norm='L2')),
    udesc('aa_visual@1.0', 'aa-standard', 1.0, 'visual'),
    udesc('pgd_audio@0.5_linf', 'pgd', 0.5, 'audio', norm='Linf'),
    udesc('pgd_visual@0.5_linf', 'pgd', 0.5, 'visual', norm='Linf'),
    udesc('pgd_visual@2.0_raw', 'pgd', 2.0, 'visual', unit='raw'),
    udesc('pgd_joint@1.0', 'pgd', 1.0, None),  # joint: not uni-modal
    dict(udesc('noise_audio@0.5', 'noise', 0.5, 'audio'),
         settings=dict(sigma=0.5)),  # no norm: not an attack
    dict(udesc('noise_visual@0.5', 'noise', 0.5, 'visual'),
         settings=dict(sigma=0.5)),
    desc('missing_audio', 'missing'),
]
#: Members of each weakest record, by hand.
WEAK_MEMBERS = {
    'weakest@0.5': ['pgd_audio@0.5', 'fgm_audio@0.5', 'pgd_visual@0.5'],
    'weakest@1.0': ['pgd_audio@1.0', 'wc_visual@1.0', 'aa_visual@1.0'],
    'weakest@0.5_linf': ['pgd_audio@0.5_linf', 'pgd_visual@0.5_linf'],
}
#: Left out of clip 5 by the evaluator's subset.
SUBSAMPLED = ('pgd_visual@0.5', 'aa_visual@1.0')


def weak_records(n=12, seed=0):
    """Random predictions (3 classes) under every perturbation; clip 5 is
    off the subsample of SUBSAMPLED (None preds)."""
    import random
    rng = random.Random(seed)
    labels = [rng.randrange(3) for _ in range(n)]
    preds = {d['name']: [rng.choice([t, t, (t + 1) % 3]) for t in labels]
             for d in WEAK}
    preds['clean'] = list(labels)
    results = records(labels, **preds)
    for r in results:
        r['subset'] = True
    results[5].update(subset=False, skipped=list(SUBSAMPLED))
    for name in SUBSAMPLED:
        results[5]['preds'][name] = None
    return results


def brute_weakest(results, members):
    """Min over members (every modality and attack) per clip, over the
    clips where every member ran."""
    kept = [min(int(r['preds'][m] == r['label']) for m in members)
            for r in results
            if all(r['preds'][m] is not None for m in members)]
    return sum(kept) / len(kept), len(kept)


def test_weakest_modality_is_the_per_clip_minimum():
    groups = worst_case_groups('auto', WEAK)
    weakest = {g['name']: g for g in groups if g['kind'] == 'weakest'}
    assert {n: sorted(g['members']) for n, g in weakest.items()} == \
        {n: sorted(m) for n, m in WEAK_MEMBERS.items()}
    assert weakest['weakest@1.0']['by_modality'] == dict(
        audio=['pgd_audio@1.0'],
        visual=['wc_visual@1.0', 'aa_visual@1.0'])
    for seed in range(5):
        results = weak_records(seed=seed)
        summary = summarize(results, WEAK, groups, ('audio', 'visual'), None)
        entries = {e['name']: e for e in summary['worst_case']}
        for name, members in WEAK_MEMBERS.items():
            accuracy, kept = brute_weakest(results, members)
            assert summary['accuracy'][name] == pytest.approx(accuracy)
            assert entries[name]['evaluated_samples'] == kept
            # Never above any modality's own worst case on the same clips.
            per_modality = entries[name]['per_modality']
            for m, names in weakest[name]['by_modality'].items():
                assert per_modality[m] == pytest.approx(
                    brute_weakest([r for r in results if all(
                        r['preds'][x] is not None for x in members)],
                        names)[0])
                assert summary['accuracy'][name] <= per_modality[m]
        # Clip 5 is off the subsample of two members, so of both records
        # with a subsampled member, and only of those.
        assert entries['weakest@0.5']['evaluated_samples'] == 11
        assert entries['weakest@1.0']['evaluated_samples'] == 11
        assert entries['weakest@0.5_linf']['evaluated_samples'] == 12
        curve = summary['curves']['weakest']
        assert curve['kind'] == 'weakest'
        assert curve['budgets'] == [0.0, 0.5, 1.0]
        # At 0 the clean accuracy on the weakest@0.5 clips.
        kept = [r for r in results if r['preds']['pgd_visual@0.5'] is not None]
        assert curve['accuracy'][0] == pytest.approx(
            sum(r['preds']['clean'] == r['label'] for r in kept) / len(kept))
        assert curve['accuracy'][1:] == [summary['accuracy']['weakest@0.5'],
                                         summary['accuracy']['weakest@1.0']]
        assert 'weakest_linf' in summary['curves']


def test_weakest_modality_names_and_when_it_appears():
    metric = RobustAccMetric(worst_case='auto')
    metric.bind(WEAK, ('audio', 'visual'), None)
    metric.begin(True)
    metrics = metric.compute_metrics(weak_records())
    assert sorted(k for k in metrics if k.startswith('weakest')) == \
        ['weakest@0.5', 'weakest@0.5_linf', 'weakest@1.0']
    assert 'auc_weakest' in metrics  # two positive budgets: a curve
    assert 'auc_weakest_linf' not in metrics  # one budget is not
    # Raw 2.0 is attacked on visual only, joint/noise/missing never count.
    assert not any(k.startswith('weakest@2.0') for k in metrics)
    # One modality only (the helpers' audio attacks): no record.
    assert not any(g['kind'] == 'weakest'
                   for g in worst_case_groups('auto', CURVE))
    # Part of 'auto' only: neither None nor an explicit dict adds it.
    assert worst_case_groups(None, WEAK) == []
    explicit = worst_case_groups(dict(w=['pgd_audio@0.5', 'pgd_visual@0.5']),
                                 WEAK)
    assert [g['name'] for g in explicit] == ['w']
    # A failed member: no number (as a worst-case group with one).
    results = weak_records()
    for r in results:
        r['preds']['pgd_audio@1.0'] = None
    results[0]['failed'] = {'pgd_audio@1.0': 'RuntimeError: x'}
    metrics = metric.compute_metrics(results)
    assert 'weakest@1.0' not in metrics and 'weakest@0.5' in metrics
    entry = {e['name']: e for e in summarize(
        results, WEAK, metric.groups, ('audio', 'visual'),
        None)['worst_case']}['weakest@1.0']
    assert entry['status'] == 'failed'


def test_weakest_prefix_is_reserved():
    with pytest.raises(ValueError, match='clashes with the metric names'):
        RobustAccMetric(worst_case='auto').bind(
            [udesc('weakest@0.5', 'pgd', 0.5, 'audio')], ('audio',), None)
    with pytest.raises(ValueError, match="reserved prefix 'weakest'"):
        worst_case_groups(dict(weakest_av=['pgd_audio@0.5',
                                           'pgd_visual@0.5']), WEAK)


def test_weakest_modality_changes_no_existing_number():
    """Every other number of 'auto' (accuracies, worst-case groups, curves,
    AUCs, certificates and the certificate check) is what it is without the
    weakest-modality records."""
    from crmt_mm.evaluation.summary import scalars
    groups = worst_case_groups('auto', WEAK)
    before = [g for g in groups if g['kind'] != 'weakest']
    assert len(before) < len(groups)
    results = weak_records()
    for i, r in enumerate(results):
        r.update(radius=0.1 * i, modality_radii=dict(audio=0.2 * i,
                                                     visual=0.05 * i))
    modalities, radii = ('audio', 'visual'), [0.0, 0.5, 1.0]
    new = summarize(results, WEAK, groups, modalities, radii)
    old = summarize(results, WEAK, before, modalities, radii)
    new_scalars, old_scalars = scalars(new), scalars(old)
    assert old_scalars['cert_violations'] > 0  # the check has work to do
    assert {k: v for k, v in new_scalars.items()
            if not k.startswith(('weakest', 'auc_weakest'))} == old_scalars
    assert new['certification'] == old['certification']
    assert {k: v for k, v in new['curves'].items()
            if v['kind'] != 'weakest'} == old['curves']
    assert new['perturbations'] == old['perturbations']
    assert new['worst_case'][:len(before)] == old['worst_case']


def test_weakest_curve_leaves_the_trust_checks_as_they_were():
    """A weakest curve that rises (per-clip worst case of monotone member
    curves) adds no trust failure: the checks are those without it."""
    from crmt_mm.evaluation.trust import TRUST_DEFAULTS, trust_checks
    descs = [udesc(f'pgd_{m}@{e}', 'pgd', e, m)
             for m in ('audio', 'visual') for e in (1.0, 2.0)]
    hits = {'pgd_audio@1.0': [0, 1], 'pgd_audio@2.0': [1, 0],
            'pgd_visual@1.0': [1, 0], 'pgd_visual@2.0': [1, 0]}
    results = records([0, 0], clean=[0, 0], **hits)
    for r in results:
        r['trust'] = dict(grad=dict(ce=dict(audio=1.0, visual=1.0),
                                    margin=dict(audio=1.0, visual=1.0)),
                          forward_diff=0.0, large={})
    groups = worst_case_groups('auto', descs)
    summary = summarize(results, descs, groups, ('audio', 'visual'), None)
    assert summary['curves']['weakest']['accuracy'] == [1.0, 0.0, 0.5]
    settings = dict(TRUST_DEFAULTS, large={})
    without = summarize(results, descs, [], ('audio', 'visual'), None)
    assert trust_checks(results, summary, settings) == \
        trust_checks(results, without, settings)
    assert trust_checks(results, summary, settings)['checks'][
        'monotone_in_eps']['status'] == 'pass'
