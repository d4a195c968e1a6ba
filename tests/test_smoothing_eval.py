"""Randomized smoothing inside the robust evaluation: the ``smoothing``
option of the loops, its records, report sections, bracket and violation
count."""
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch

from crmt_mm.attacks import build_perturbations
from crmt_mm.evaluation.report import build_report, render_markdown, \
    write_report
from crmt_mm.evaluation.smoothing_eval import (EMPIRICAL_LABEL,
                                               SmoothingRun,
                                               smoothing_scalars,
                                               smoothing_subset,
                                               summarize_smoothing)
from helpers_eval import desc, robust_runner
from helpers_smoothing import LinearFusion, linear_inputs

ENTRY = dict(type='GaussianSmoothingCertifier', modality='audio', sigma=0.25,
             n0=16, n=64, alpha=0.01, batch_size=64)


# ---- subset and entry checks ----------------------------------------------

def test_subset_is_seeded_and_exact():
    a = smoothing_subset(100, 10, seed=3)
    assert a == smoothing_subset(100, 10, seed=3)
    assert len(a) == 10 and all(0 <= i < 100 for i in a)
    assert a != smoothing_subset(100, 10, seed=4)
    assert smoothing_subset(5, 10) == smoothing_subset(5, None) == \
        frozenset(range(5))


@pytest.mark.parametrize('change, match', [
    (dict(subset=dict(size=0)), 'subset.size'),
    (dict(subset=dict(size=3, seeds=1)), 'subset must be'),
    (dict(subset=5), 'subset must be'),
    (dict(radii=[-1.0]), 'radii'),
    (dict(radii=[]), 'radii'),
    (dict(check_attacks='yes'), 'check_attacks'),
    (dict(sigma=0), 'sigma'),
])
def test_entry_rejects_bad_values(change, match):
    with pytest.raises(ValueError, match=match):
        SmoothingRun(dict(ENTRY, **change), [], ('audio', 'visual'))


def test_entry_rejects_unknown_modality_and_keys():
    with pytest.raises(KeyError, match='flow'):
        SmoothingRun(dict(ENTRY, modality='flow'), [], ('audio', 'visual'))
    with pytest.raises(TypeError, match='n0'):
        SmoothingRun(dict(ENTRY, n00=3), [], ('audio', 'visual'))


def test_default_radii_and_covered_attacks():
    descs = [desc('pgd_audio@0.5', 'pgd', 0.5), desc('pgd_audio@1.0', 'pgd',
                                                     1.0),
             dict(desc('pgd_visual@2.0', 'pgd', 2.0, label='visual'),
                  modalities=['visual'])]
    run = SmoothingRun(ENTRY, descs, ('audio', 'visual'))
    assert run.radii == [0.0, 0.5, 1.0]
    assert run.attacks == {'pgd_audio@0.5': 0.5, 'pgd_audio@1.0': 1.0}
    joint = SmoothingRun(dict(ENTRY, modality=None), descs,
                         ('audio', 'visual'))
    assert sorted(joint.attacks) == sorted(d['name'] for d in descs)
    d = run.describe()
    assert d['label'].startswith('sound w.p. 1 - alpha (smoothed classifier')
    assert d['attack_budgets'] == run.attacks and d['subset'] is None


# ---- summaries on constructed records ---------------------------------------

NAME = 'smoothing_audio@0.25'
ATTACKS = {'pgd_audio@0.5': 0.5, 'pgd_audio@1.0': 1.0, 'aa_audio@2.0': 2.0}


def _entry(radii=(0.0, 0.5, 1.0)):
    return dict(name=NAME, scope='audio', label='sound w.p. 1 - alpha (...)',
                radii=list(radii), attack_budgets=dict(ATTACKS), n=64)


def _record(label, clean, broken_at, pred, radius, empirical, checks=None):
    """A robust record: clean prediction, attack predictions breaking the
    clip at every budget >= broken_at, a smoothing result."""
    preds = dict(clean=clean)
    for name, eps in ATTACKS.items():
        preds[name] = (label + 1) % 10 if eps >= broken_at else label
    cert = dict(prediction=pred, radius=radius, p_lower=0.9, selected=pred,
                count=60, n=64, modality_radii=dict(audio=radius),
                checks=checks or {})
    return dict(label=label, preds=preds, radius=empirical,
                modality_radii=dict(audio=empirical, visual=9.0),
                smoothing={NAME: cert})


def test_bracket_median_gaps_and_certified_accuracy():
    records = [
        _record(0, 0, 1.0, 0, 0.4, 0.8),     # broken at 1.0
        _record(1, 1, 2.0, 1, 0.6, 1.5),     # broken at 2.0
        _record(2, 2, math.inf, 2, 0.2, 3.0),  # never broken: attack inf
        _record(3, 3, 0.5, 5, 0.7, 0.1),     # smoothed wrong: sound 0
        _record(4, 7, 0.5, -1, 0.0, 0.0),    # wrong clean: attack 0
        dict(label=5, preds=dict(clean=5)),  # outside the subset
    ]
    (s,) = summarize_smoothing(records, [_entry()])
    assert s['num_samples'] == 5
    assert s['abstention_rate'] == pytest.approx(0.2)
    assert s['smoothed_accuracy'] == pytest.approx(0.6)
    # correct and radius > R: R=0 -> 3, R=0.5 -> 1 (0.6), R=1 -> 0
    assert s['certified'] == pytest.approx([0.6, 0.2, 0.0])
    assert s['curve']['radius'] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert s['curve']['accuracy'] == pytest.approx([0.6, 0.4, 0.2, 0.0])
    b = s['bracket']
    assert [x['sound'] for x in b['samples']] == pytest.approx(
        [0.4, 0.6, 0.2, 0.0, 0.0])
    assert [x['attack'] for x in b['samples']] == [1.0, 2.0, math.inf, 0.5,
                                                   0.0]
    assert [x['empirical'] for x in b['samples']] == [0.8, 1.5, 3.0, 0.1,
                                                      0.0]
    assert b['median']['sound'] == pytest.approx(0.2)
    assert b['median']['attack'] == pytest.approx(0.75)  # inf dropped
    # gaps over samples with a finite attack budget
    assert b['median_gap']['attack_minus_sound'] == pytest.approx(
        np.median([0.6, 1.4, 0.5, 0.0]))
    assert b['median_gap']['empirical_minus_sound'] == pytest.approx(
        np.median([0.4, 0.9, 2.8, 0.1, 0.0]))
    assert b['median_gap']['attack_minus_empirical'] == pytest.approx(
        np.median([0.2, 0.5, 0.4, 0.0]))
    assert b['sound_above_attack'] == 0
    metrics = smoothing_scalars([s])
    assert metrics[f'{NAME}/certified@0.5'] == pytest.approx(0.2)
    assert metrics[f'{NAME}/abstain'] == pytest.approx(0.2)
    assert f'{NAME}/violations' not in metrics  # nothing checked


def test_violation_count_ignores_abstentions():
    records = [
        _record(0, 0, 1.0, 0, 0.9, 1.0, checks={'pgd_audio@0.5': 0}),
        _record(1, 1, 1.0, 1, 0.9, 1.0, checks={'pgd_audio@0.5': -1}),
        _record(2, 2, 1.0, 2, 0.9, 1.0, checks={'pgd_audio@0.5': 4}),
        _record(3, 3, 1.0, 5, 0.9, 1.0, checks={'pgd_audio@0.5': 5}),
    ]
    (s,) = summarize_smoothing(records, [_entry()])
    v = s['violations']
    assert (v['checked'], v['abstained'], v['total']) == (4, 1, 1)
    assert v['by_attack']['pgd_audio@0.5'] == dict(
        checked=4, abstained=1, same=2, violations=1)
    assert smoothing_scalars([s])[f'{NAME}/violations'] == 1


def test_report_sections_labels_and_png(tmp_path):
    records = [_record(i % 3, i % 3, 1.0, i % 3, 0.3 + 0.05 * i, 0.8)
               for i in range(6)]
    protocol = dict(
        run=dict(stage='test', model='M', head='H', work_dir=str(tmp_path)),
        modalities=['audio', 'visual'], clamp_ranges={},
        certification=dict(status='on', label='empirical', radii=[0, 0.5],
                           tau=dict(source='model')),
        smoothing=[_entry()])
    descs = [desc(n, 'pgd', eps) for n, eps in ATTACKS.items()]
    report = build_report(records, descs, protocol)
    (s,) = report['smoothing']
    assert s['name'] == NAME and s['num_samples'] == 6
    assert report['metrics'][f'robust/{NAME}/certified@0.5'] == \
        pytest.approx(s['certified'][1])
    text = render_markdown([report], ['run'])
    assert 'sound w.p. 1 - alpha' in text and EMPIRICAL_LABEL in text
    assert 'abstention rate' in text and 'Per-sample bracket' in text
    paths = write_report(report, str(tmp_path))
    assert osp.getsize(paths['png']) > 0
    from crmt_mm.evaluation.report import _series
    names = [x['name'] for x in _series(report)]
    assert any(n.startswith('smoothed, sound w.p. 1 - alpha') for n in names)
    assert any(n.endswith(EMPIRICAL_LABEL) for n in names)
    with open(paths['json']) as f:
        assert json.load(f)['smoothing'][0]['bracket']['attacks'] == [
            'pgd_audio@0.5', 'pgd_audio@1.0', 'aa_audio@2.0']


# ---- the attack check on a linear model -------------------------------------

def test_attacks_inside_the_radius_never_flip_the_smoothed_classifier():
    """Linear 2-class model, uni-modal noise: for every certified point
    and every PGD budget below its radius, PREDICT at the attacked point
    returns the certified class or abstains (the soundness property)."""
    torch.manual_seed(0)
    model = LinearFusion(dict(audio=6, visual=3), seed=1)
    x = linear_inputs(dict(audio=6, visual=3), 24, seed=2, scale=0.3)
    y = model.fused_logits(x).argmax(1)
    attacks = build_perturbations([dict(type='UniModalPGD',
                                        modality='audio',
                                        eps=[0.05, 0.1, 0.2], steps=10)])
    descs = [p.describe() for p in attacks]
    run = SmoothingRun(dict(ENTRY, sigma=0.5, n0=32, n=256, alpha=0.001),
                       descs, model.modalities)
    run.begin(None)
    out = run.process(model.fused_logits, x, y, list(range(24)), attacks,
                      None)
    rows = [dict(label=int(t), preds=dict(clean=int(t)),
                 smoothing={run.name: r}) for t, r in zip(y.tolist(), out)]
    (s,) = summarize_smoothing(rows, [run.describe()])
    assert s['violations']['checked'] >= 10
    assert s['violations']['total'] == 0
    for r in out:
        for name, c in r['checks'].items():
            assert run.attacks[name] < r['radius'] and r['prediction'] >= 0


# ---- the loop on the tiny AV-Digits fixture ----------------------------------

def test_robust_test_loop_with_smoothing(avdigits_tiny, tmp_path):
    # Initial weights, no tau: the smoothing part needs neither.
    runner = robust_runner(
        avdigits_tiny, tmp_path, [dict(type='UniModalPGD', modality='audio',
                                       eps=0.01)],
        indices=5, batch_size=3, smoothing=[dict(
            ENTRY, n=32, subset=dict(size=3, seed=1), radii=[0, 0.01, 0.5])])
    metrics = runner.test()
    with open(osp.join(str(tmp_path), 'robustness.json')) as f:
        report = json.load(f)
    (s,) = report['smoothing']
    assert s['num_samples'] == 3 and s['settings']['subset'] == dict(
        size=3, seed=1)
    assert s['label'] == ('sound w.p. 1 - alpha (smoothed classifier, '
                          'sigma=0.25, N=32, alpha=0.01)')
    assert s['violations']['total'] == 0
    assert f'robust/{NAME}/certified@0.5' in metrics
    assert f'robust/{NAME}/abstain' in metrics
    assert len(s['bracket']['samples']) == 3
    assert NAME in report['run']['seconds_per_batch_rank0']
    records = runner.test_loop.metric.records
    certified = [i for i, r in enumerate(records) if r.get('smoothing')]
    assert certified == sorted(smoothing_subset(5, 3, 1))


def test_loop_names_the_missing_sample_idx(avdigits_tiny, tmp_path):
    runner = robust_runner(
        avdigits_tiny, tmp_path, [], indices=2, batch_size=2,
        smoothing=[dict(ENTRY, n=8, n0=4)])
    pipeline = runner.cfg.test_dataloader.dataset.pipeline
    pipeline[-1]['meta_keys'] = ('img_shape',)
    runner._test_loop = runner.cfg.test_cfg  # rebuild with the new pipeline
    runner._test_dataloader = runner.cfg.test_dataloader
    with pytest.raises(KeyError, match="'sample_idx' to the test pipeline"):
        runner.test()


# ---- DDP: 2 gloo processes equal 1 ------------------------------------------

DDP_TEST = 5  # odd: the second rank gets one padded sample


@pytest.mark.slow
def test_ddp_smoothing_equals_single_process(avdigits_tiny, tmp_path):
    import os
    import pickle
    import subprocess
    import sys

    from mmengine.runner import Runner

    from helpers import ROOT, free_port, tiny_config
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path))
    Runner.from_cfg(cfg).save_checkpoint(
        str(tmp_path), 'ckpt.pth', save_optimizer=False,
        save_param_scheduler=False)
    config = osp.join(str(tmp_path), 'smoothing_test.py')
    with open(config, 'w') as f:
        f.write(f"""
_base_ = [{osp.join(ROOT, 'configs', 'crmt_avdigits.py')!r}]
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(
        ann_file={osp.join(avdigits_tiny, 'avdigits_test.txt')!r},
        data_prefix=dict(img={osp.join(avdigits_tiny, 'rawframes', 'test')!r},
                         audio={osp.join(avdigits_tiny, 'audio', 'test')!r}),
        indices={DDP_TEST}))
test_cfg = dict(
    _delete_=True, type='RobustTestLoop',
    perturbations=[dict(type='UniModalPGD', modality='audio', eps=0.01)],
    smoothing=[dict(type='GaussianSmoothingCertifier', modality='audio',
                    sigma=0.25, n0=8, n=32, alpha=0.01, batch_size=16),
               dict(type='GaussianSmoothingCertifier', modality=None,
                    sigma=dict(audio=0.25, visual=0.5), n0=8, n=32,
                    alpha=0.01, batch_size=16, subset=dict(size=3, seed=2))])
test_evaluator = [dict(type='RobustAccMetric')]
# The norm check reads every split's avdigits_norm.json: point all here.
train_dataloader = dict(dataset=dict(
    ann_file={osp.join(avdigits_tiny, 'avdigits_train.txt')!r},
    data_prefix=dict(img={osp.join(avdigits_tiny, 'rawframes', 'train')!r},
                     audio={osp.join(avdigits_tiny, 'audio', 'train')!r})))
val_dataloader = test_dataloader
log_level = 'WARNING'
""")
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1')
    runs = {}
    for name, command in (
            ('single', [sys.executable, osp.join(ROOT, 'tools', 'test.py')]),
            ('ddp', ['bash', osp.join(ROOT, 'tools', 'dist_test.sh')])):
        work = osp.join(str(tmp_path), name)
        args = [config, osp.join(str(tmp_path), 'ckpt.pth')] + (
            ['2'] if name == 'ddp' else []) + [
            '--work-dir', work, '--dump', osp.join(work, 'dump.pkl')]
        runs[name] = (work, subprocess.Popen(
            command + args, env=env, cwd=str(tmp_path),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = {}
    for name, (work, process) in runs.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
        with open(osp.join(work, 'robustness.json')) as f:
            report = json.load(f)
        with open(osp.join(work, 'dump.pkl'), 'rb') as f:
            results[name] = report, pickle.load(f)
    (single, s_dump), (ddp, d_dump) = results['single'], results['ddp']
    assert ddp['run']['world_size'] == 2
    assert [s['num_samples'] for s in single['smoothing']] == [DDP_TEST, 3]
    assert single['smoothing'] == ddp['smoothing']
    assert single['metrics'] == ddp['metrics']
    assert len(s_dump) == len(d_dump) == DDP_TEST
    for a, b in zip(s_dump, d_dump):
        assert a['robust_record'] == b['robust_record']
