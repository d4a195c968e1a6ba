"""RobustTestLoop / RobustValLoop through the Runner: metrics, reports,
config errors, tau on demand, failures and the validation schedule."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from crmt_mm.attacks import PERTURBATION_TYPES, Perturbation, UniModalPGD
from crmt_mm.certification import certified_radius
from crmt_mm.evaluation import load_report
from crmt_mm.evaluation.model_state import eval_mode
from helpers import tiny_config
from helpers_eval import (ATTACKS, RADII, log_text, robust_runner,
                          save_tau_checkpoint)


@pytest.fixture(scope='module')
def checkpoint(avdigits_tiny, tmp_path_factory):
    """The seeded initial CRMT model saved with tau estimated on the
    training data (as the phase switch would). A few epochs on 30 clips do
    not beat it, and it gets 1 of the 7 test clips right, so the attack
    checks below are not vacuous."""
    return save_tau_checkpoint(
        avdigits_tiny, str(tmp_path_factory.mktemp('robust_ckpt')))


def test_robust_test_loop(avdigits_tiny, checkpoint, tmp_path):
    runner = robust_runner(avdigits_tiny, tmp_path, ATTACKS,
                           certify=dict(radii=RADII))
    model = runner.model
    runner.load_checkpoint(checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = runner.test()
    # Testing must not build the train loop (and its dataloader).
    assert isinstance(runner._train_loop, dict)

    # Parameters and BatchNorm buffers untouched, no parameter gradient.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())

    names = ['pgd_audio@0.5', 'pgd_audio@1.0', 'fgm_audio@0.5',
             'fgm_audio@1.0', 'pgd_joint@100.0', 'missing_visual',
             'missing_audio_feat', 'noise_audio@0.1', 'worst_audio@0.5',
             'worst_audio@1.0']
    certified = [f'certified{m}@{float(r)}' for m in ('', '_visual',
                                                       '_audio')
                 for r in RADII]
    expected = {'clean', 'auc_pgd_audio', 'auc_fgm_audio',
                'auc_worst_audio', 'cert_violations', *names, *certified}
    robust = {k.split('/', 1)[1]: v for k, v in metrics.items()
              if k.startswith('robust/')}
    assert expected <= set(robust)
    assert set(robust) - expected <= {'radius_median', 'radius_median_visual',
                                      'radius_median_audio'}
    clean = robust['clean']
    assert clean > 0  # else robust <= clean below is vacuous
    assert clean == pytest.approx(metrics['acc/fused_top1'])
    for key in names + certified + ['auc_pgd_audio']:
        assert 0.0 <= robust[key] <= 1.0, key
    for key in names:
        if not key.startswith('missing') and not key.startswith('noise'):
            assert robust[key] <= clean, key
    for eps in ('0.5', '1.0'):
        assert robust[f'worst_audio@{eps}'] <= min(
            robust[f'pgd_audio@{eps}'], robust[f'fgm_audio@{eps}'])
    assert robust['pgd_joint@100.0'] == 0.0
    for m in ('', '_visual', '_audio'):
        values = [robust[f'certified{m}@{float(r)}'] for r in RADII]
        assert values == sorted(values, reverse=True)
        assert values[0] <= clean
    for r in RADII:  # r(x) <= min_m r^(m)(x) for correct samples
        assert robust[f'certified@{float(r)}'] <= min(
            robust[f'certified_visual@{float(r)}'],
            robust[f'certified_audio@{float(r)}'])

    # The same numbers computed directly on the same batches.
    correct = dict(clean=0, pgd=0, feat=0)
    radii = []
    spaces = model.input_spaces()
    attack = UniModalPGD('audio', eps=0.5)
    with eval_mode(model), torch.no_grad():
        for batch in runner.test_dataloader:
            x, y, _ = model.batch_to_modalities(batch)
            z = model.modality_logits(x)
            correct['clean'] += int((model.fuse(z).argmax(1) == y).sum())
            correct['feat'] += int((model.fuse(z, drop=('audio',))
                                    .argmax(1) == y).sum())
            correct['pgd'] += int((attack.predict(model.fused_logits, x, y,
                                                  spaces).argmax(1)
                                   == y).sum())
            radii.append(certified_radius(
                torch.stack([z[m] for m in model.modalities]),
                model.integration_weights(), model.bias, model.tau, y))
    radii = torch.cat(radii)
    assert robust['clean'] == correct['clean'] / 7
    assert robust['missing_audio_feat'] == correct['feat'] / 7
    assert robust['pgd_audio@0.5'] == correct['pgd'] / 7
    for r in RADII:
        assert robust[f'certified@{float(r)}'] == pytest.approx(
            float((radii > r).float().mean()))

    # The report: JSON (with settings and tau provenance), markdown, plot.
    report = load_report(osp.join(str(tmp_path), 'robustness.json'))
    assert report['run']['num_samples'] == 7
    assert report['metrics']['robust/clean'] == clean
    pgd = next(p for p in report['perturbations']
               if p['name'] == 'pgd_audio@0.5')
    assert pgd['settings']['eps_unit'] == 'normalized'
    assert pgd['settings']['steps'] == 4
    assert pgd['settings']['step_size'] == pytest.approx(0.5 / 3)
    assert pgd['settings']['random_start'] is False
    assert report['certification']['tau']['source'] == 'model'
    assert 'empirical' in report['certification']['label']
    assert report['curves']['pgd_audio']['budgets'] == [0.0, 0.5, 1.0]
    assert report['curves']['pgd_audio']['accuracy'][0] == clean
    markdown = open(osp.join(str(tmp_path), 'robustness.md')).read()
    assert '| robust/pgd_audio@0.5 |' in markdown
    assert osp.getsize(osp.join(str(tmp_path), 'robustness.png')) > 0


@pytest.mark.parametrize('perturbations, certify, match', [
    ([dict(type='UniModalPGDD', modality='audio', eps=0.5)], None,
     'unknown perturbation type'),
    ([dict(type='UniModalPGD', modality='audio', eps=-0.5)], None,
     'eps must be a finite number >= 0'),
    ([dict(type='UniModalPGD', modality='depth', eps=0.5)], None,
     "modality 'depth'"),
    ([dict(type='MissingModality', modality='audio')],
     dict(radius=[0.1]), 'unknown keys'),
    ([], dict(tau_source='guess'), 'tau_source'),
    ([], dict(radii=[-1]), 'radii'),
    ([], None, 'nothing to evaluate'),
])
def test_bad_configs_fail_before_the_first_batch(avdigits_tiny, tmp_path,
                                                 perturbations, certify,
                                                 match):
    runner = robust_runner(avdigits_tiny, tmp_path, perturbations, certify)
    with pytest.raises(ValueError, match=match):
        runner.test()


def test_bad_loop_and_metric_arguments(avdigits_tiny, tmp_path):
    runner = robust_runner(avdigits_tiny, tmp_path,
                           [dict(type='MissingModality', modality='audio')],
                           log_interval=0)
    with pytest.raises(ValueError, match='log_interval'):
        runner.test()
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path))
    cfg.val_cfg = dict(type='RobustValLoop', interval=0, perturbations=[
        dict(type='MissingModality', modality='audio')])
    with pytest.raises(ValueError, match='interval must be an int >= 1'):
        Runner.from_cfg(cfg).val()
    runner = robust_runner(
        avdigits_tiny, tmp_path,
        [dict(type='UniModalPGD', modality='audio', eps=0.5)],
        evaluator=[dict(type='RobustAccMetric',
                        worst_case=dict(w=['pgd_audio@0.5', 'nope']))])
    with pytest.raises(ValueError, match="unknown perturbations \\['nope'\\]"):
        runner.test()


def test_jt_model_without_tau(avdigits_tiny, tmp_path):
    """JT (all-zero tau): skipped with one warning, or estimated on demand."""
    attacks = [dict(type='MissingModality', modality='audio')]
    runner = robust_runner(avdigits_tiny, tmp_path / 'skip', attacks,
                           certify=dict(), config='jt_avdigits.py',
                           evaluator=[dict(type='AccMetric')])
    metrics = runner.test()
    assert 'robust/missing_audio' in metrics  # the metric was added
    assert not any('certified' in k for k in metrics)
    assert log_text(runner).count('certification skipped') == 1
    report = load_report(str(tmp_path / 'skip' / 'robustness.json'))
    assert report['certification']['status'] == 'skipped'

    runner = robust_runner(avdigits_tiny, tmp_path / 'est', attacks,
                           certify=dict(tau_source='estimate',
                                        tau_max_batches=2),
                           config='jt_avdigits.py', indices=1)
    metrics = runner.test()
    assert 'robust/certified@0.0' in metrics
    assert not bool(runner.model.tau.any())  # the buffer is left alone
    tau = load_report(str(tmp_path / 'est' / 'robustness.json'))[
        'certification']['tau']
    assert tau['source'] == 'estimated at evaluation time'
    assert tau['num_samples'] == 16  # two train batches of 8
    assert np.array(tau['values']).shape == (2, 10)


@pytest.mark.parametrize('indices, certify', [
    (0, dict()),  # an untrained model: certification skipped
    (1, dict(tau_source='estimate', tau_data='self'))])
def test_empty_and_single_sample_datasets(avdigits_tiny, tmp_path, indices,
                                          certify):
    runner = robust_runner(
        avdigits_tiny, tmp_path,
        [dict(type='UniModalFGM', modality='audio', eps=0.5)],
        certify=certify, indices=indices,
        evaluator=[dict(type='RobustAccMetric')])
    metrics = runner.test()
    report = load_report(osp.join(str(tmp_path), 'robustness.json'))
    assert report['run']['num_samples'] == indices
    if indices == 0:
        assert metrics == {}
    else:
        assert metrics['robust/clean'] in (0.0, 1.0)
        assert metrics['robust/fgm_audio@0.5'] <= metrics['robust/clean']


class Exploding(Perturbation):
    """Fails on its second batch, after one successful batch."""

    def __init__(self, name=None):
        super().__init__(name)
        self.calls = 0

    def default_name(self):
        return 'exploding'

    def predict(self, forward, x, y, spaces=None):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError('boom')
        return forward(x)


def test_failing_perturbation_is_reported_others_survive(
        avdigits_tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(PERTURBATION_TYPES, 'Exploding', Exploding)
    runner = robust_runner(
        avdigits_tiny, tmp_path,
        [dict(type='Exploding'),
         dict(type='MissingModality', modality='audio')])
    metrics = runner.test()
    assert 'robust/exploding' not in metrics
    assert 0 <= metrics['robust/missing_audio'] <= 1
    report = load_report(osp.join(str(tmp_path), 'robustness.json'))
    failed = report['perturbations'][0]
    assert failed['status'] == 'failed'
    assert failed['error'] == 'RuntimeError: boom'
    assert failed['evaluated_samples'] == 3
    assert report['perturbations'][1]['status'] == 'ok'
    assert "perturbation 'exploding' failed" in log_text(runner)
    assert 'FAILED: RuntimeError: boom' in open(
        osp.join(str(tmp_path), 'robustness.md')).read()


def test_robust_val_loop_interval(avdigits_tiny, tmp_path):
    """Robust part at epochs divisible by `interval` and at the last one;
    clean accuracy at every validation."""
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path),
                      train_cfg=dict(max_epochs=3, val_interval=1),
                      custom_hooks=[])
    cfg.train_dataloader.dataset.indices = 8
    cfg.val_dataloader.dataset.indices = 2
    cfg.val_cfg = dict(type='RobustValLoop', interval=2,
                       perturbations=[dict(type='MissingModality',
                                           modality='audio')])
    cfg.val_evaluator = [dict(type='AccMetric'), dict(type='RobustAccMetric')]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    runner = Runner.from_cfg(cfg)
    seen = []
    runner.register_hook(RecordMetrics(seen), priority='HIGHEST')
    runner.train()
    assert [('acc/fused_top1' in m, 'robust/missing_audio' in m)
            for m in seen] == [(True, False), (True, True), (True, True)]
    for epoch, written in ((1, False), (2, True), (3, True)):
        path = osp.join(str(tmp_path), f'val_epoch_{epoch}',
                        'robustness.json')
        assert osp.exists(path) == written


class RecordMetrics(Hook):
    """Keeps each validation's metric dict."""

    def __init__(self, seen):
        self.seen = seen

    def after_val_epoch(self, runner, metrics=None):
        self.seen.append(dict(metrics))
