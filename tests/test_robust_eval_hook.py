"""RobustEvalHook: robust evaluation from ``custom_hooks`` during real
mmengine training (CRMT, JT, a stock MMRecognizer3D), its scalars and
reports, resume without a repeated evaluation, untouched training state,
and a 2-process gloo run equal to a single process."""
import glob
import json
import os
import os.path as osp
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from crmt_mm.compat import safe_torch_load
from crmt_mm.engine.hooks.phase_switch_hook import unwrap
from crmt_mm.evaluation import RobustEvalHook, load_report
from helpers import ROOT, free_port, tiny_config
from helpers_eval import log_text, robust_runner, tiny_rgbpose_model

ATTACKS = [
    dict(type='UniModalPGD', modality='audio', eps=[0.5, 1.0], steps=2),
    dict(type='UniModalFGM', modality='visual', eps=1.0),
    dict(type='MissingModality', modality='visual'),
]
KEY = 'crmt_robust_eval'


def hook_entry(perturbations=ATTACKS, **options) -> dict:
    return dict(type='RobustEvalHook', perturbations=perturbations,
                log_interval=1, **options)


def train_config(root, work_dir, hooks, config='crmt_avdigits.py',
                 max_epochs=2, val_indices=2, **options):
    """A tiny training config (one iteration of 8 clips per epoch) whose
    val dataloader holds ``val_indices`` clips in batches of 2."""
    cfg = tiny_config(config, root, str(work_dir), **options)
    cfg.train_dataloader.dataset.indices = 8
    cfg.train_cfg.max_epochs = max_epochs
    cfg.custom_hooks = hooks
    cfg.val_dataloader.dataset.indices = val_indices
    cfg.val_dataloader.batch_size = 2
    return cfg


def the_hook(runner) -> RobustEvalHook:
    return next(h for h in runner.hooks if isinstance(h, RobustEvalHook))


def vis_scalars(runner) -> list:
    """The LocalVisBackend's scalars.json lines of this run."""
    path = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def robust_steps(runner) -> list:
    return [s['step'] for s in vis_scalars(runner) if 'robust/clean' in s]


class StateProbe(Hook):
    """Snapshots the training state in ``after_train_epoch``; two probes
    with priorities around the RobustEvalHook's (LOW = 70) bracket it."""

    def __init__(self, shots):
        self.shots = shots

    def after_train_epoch(self, runner):
        model = unwrap(runner.model)
        self.shots.append(dict(
            state={k: v.clone() for k, v in model.state_dict().items()},
            grads=[None if p.grad is None else p.grad.clone()
                   for p in model.parameters()],
            modes=[m.training for m in model.modules()],
            rng=(torch.get_rng_state(), np.random.get_state()[1].copy(),
                 random.getstate()),
            evaluated=list(the_hook(runner).evaluated)))


def assert_same_state(a, b):
    assert a['state'].keys() == b['state'].keys()
    for k in a['state']:
        assert torch.equal(a['state'][k], b['state'][k]), k
    assert all((x is None and y is None) or torch.equal(x, y)
               for x, y in zip(a['grads'], b['grads']))
    assert a['modes'] == b['modes']
    assert torch.equal(a['rng'][0], b['rng'][0])
    assert np.array_equal(a['rng'][1], b['rng'][1])
    assert a['rng'][2] == b['rng'][2]


def test_hook_during_crmt_training(avdigits_tiny, tmp_path):
    """Two epochs (the second in CRMT step 2): an evaluation per epoch,
    scalars in the message hub and scalars.json, a report per epoch, and
    the training state bit-identical across each evaluation."""
    hooks = [dict(type='CRMTPhaseSwitchHook', switch_epoch=1, lr_factor=0.3,
                  tau_max_batches=1),
             hook_entry(certify=dict(radii=[0, 0.5]), worst_case='auto')]
    runner = Runner.from_cfg(train_config(avdigits_tiny, tmp_path, hooks,
                                          val_indices=4))
    before, after = [], []
    runner.register_hook(StateProbe(before), priority=69)
    runner.register_hook(StateProbe(after), priority=71)
    runner.train()

    hook = the_hook(runner)
    assert hook.evaluated == [1, 2]
    assert [s['evaluated'] for s in before] == [[], [1]]
    assert [s['evaluated'] for s in after] == [[1], [1, 2]]
    for a, b in zip(before, after):
        assert_same_state(a, b)
    # Step 2 keeps the encoders in eval mode during training: the mixed
    # per-module modes are restored, not reset to model.train().
    assert not all(after[1]['modes']) and any(after[1]['modes'])

    reports = {e: load_report(str(tmp_path / 'robust' / f'epoch_{e}' /
                                  'robustness.json')) for e in (1, 2)}
    for e in (1, 2):
        for ext in ('md', 'png'):
            assert (tmp_path / 'robust' / f'epoch_{e}' /
                    f'robustness.{ext}').is_file()
        assert reports[e]['run']['progress'] == f'epoch_{e}'
        assert reports[e]['run']['driver'] == 'RobustEvalHook'
        assert reports[e]['run']['num_samples'] == 4
    # Phase 1 has no tau (skipped, said so); step 2 certifies with it.
    assert reports[1]['certification']['status'] == 'skipped'
    assert reports[2]['certification']['status'] == 'on'
    assert 'robust/certified@0.5' in reports[2]['metrics']
    metrics = reports[2]['metrics']
    for key in ('pgd_audio@0.5', 'pgd_audio@1.0', 'fgm_visual@1.0'):
        assert 0 <= metrics[f'robust/{key}'] <= metrics['robust/clean']
    assert 'robust/worst_visual@1.0' not in metrics  # no FGM/PGD pair

    # Message hub: one value per evaluation, the latest = the report's.
    hub = runner.message_hub
    for key, value in metrics.items():
        assert hub.get_scalar(key).current() == pytest.approx(value)
    assert len(hub.get_scalar('robust/clean').data[0]) == 2
    # Visualizer backends (LocalVisBackend): robust/* at step = epoch.
    lines = [s for s in vis_scalars(runner) if 'robust/clean' in s]
    assert [s['step'] for s in lines] == [1, 2]
    assert {k for k in lines[1] if k != 'step'} == set(metrics)


class StopAfterEpoch(Hook):
    """Stands for a kill right after the epoch's checkpoint is written."""

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW)

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == 1:
            raise KeyboardInterrupt('killed after epoch 1')


def test_resume_does_not_repeat_an_evaluation(avdigits_tiny, tmp_path):
    # What is evaluated does not matter here, only when.
    entry = hook_entry([dict(type='MissingModality', modality='visual')])

    def runner_for(**options):
        cfg = train_config(avdigits_tiny, tmp_path, [entry], **options)
        return Runner.from_cfg(cfg)

    report = tmp_path / 'robust' / 'epoch_{}' / 'robustness.json'
    killed = runner_for()
    killed.register_hook(StopAfterEpoch())
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert robust_steps(killed) == [1]
    checkpoint = safe_torch_load(str(tmp_path / 'epoch_1.pth'))
    assert checkpoint[KEY] == dict(unit='epoch', evaluated=[1])
    first = osp.getmtime(str(report).format(1)), \
        open(str(report).format(1)).read()
    assert not osp.exists(str(report).format(2))

    resumed = runner_for(resume=True)
    resumed.train()
    assert robust_steps(resumed) == [2]  # epoch 1 not again, epoch 2 once
    assert the_hook(resumed).evaluated == [1, 2]
    assert (osp.getmtime(str(report).format(1)),
            open(str(report).format(1)).read()) == first
    assert load_report(str(report).format(2))['run']['progress'] == 'epoch_2'

    # A finished run resumed from its last checkpoint evaluates nothing.
    last = str(tmp_path / 'epoch_2.pth')
    again = runner_for(resume=True, load_from=last)
    again.train()
    assert robust_steps(again) == [] and the_hook(again).evaluated == [1, 2]

    # An older checkpoint without the key: a warning, and the reports on
    # disk tell what ran; a missing final report is caught up at the end.
    checkpoint = safe_torch_load(last)
    del checkpoint[KEY]
    old = str(tmp_path / 'old.pth')
    torch.save(checkpoint, old)
    os.remove(str(report).format(2))
    legacy = runner_for(resume=True, load_from=old)
    legacy.train()
    text = log_text(legacy)
    assert f"has no '{KEY}' record" in text and 'as evaluated: [1]' in text
    assert robust_steps(legacy) == [2]
    assert osp.isfile(str(report).format(2))


def test_hook_on_jt_model_at_the_end_only(avdigits_tiny, tmp_path):
    """JT (ConcatHead, no tau of its own): uni-modal attacks, and tau
    estimated at evaluation time for the certificates, only at the end."""
    entry = hook_entry(interval=0, report_dir=str(tmp_path / 'reports'),
                       certify=dict(tau_source='estimate', tau_data='self',
                                    radii=[0, 0.5]))
    runner = Runner.from_cfg(train_config(
        avdigits_tiny, tmp_path, [entry], config='jt_avdigits.py'))
    runner.train()
    assert the_hook(runner).evaluated == [2]
    assert robust_steps(runner) == [2]
    assert os.listdir(str(tmp_path / 'reports')) == ['epoch_2']
    assert not (tmp_path / 'robust').exists()
    report = load_report(str(tmp_path / 'reports' / 'epoch_2' /
                             'robustness.json'))
    assert report['run']['head'] == 'ConcatHead'
    tau = report['certification']['tau']
    assert tau['source'] == 'estimated at evaluation time'
    assert tau['data'] == 'the val dataloader'
    assert not bool(unwrap(runner.model).tau.any())  # the model's stays 0
    metrics = report['metrics']
    for key in ('pgd_audio@0.5', 'pgd_audio@1.0', 'fgm_visual@1.0'):
        assert 0 <= metrics[f'robust/{key}'] <= metrics['robust/clean']
    assert 'robust/certified@0.5' in metrics


def test_hook_on_stock_mmrecognizer3d(tmp_path):
    """mmaction2's RGBPoseConv3D recognizer (through RobustMMRecognizer3D)
    trained by iterations, evaluated on a dataloader given to the hook
    (the run has no val dataloader): interval counts iterations."""
    data = dict(batch_size=2, num_workers=0,
                dataset=dict(type='TinyRGBPoseClips', num=2),
                sampler=dict(type='DefaultSampler', shuffle=False))
    hook = hook_entry(
        perturbations=[
            dict(type='UniModalPGD', modality='imgs', eps=[1.0, 4.0],
                 steps=1),
            dict(type='MissingModality', modality='heatmap_imgs')],
        interval=1, dataloader=data)
    runner = Runner(
        model=tiny_rgbpose_model(), work_dir=str(tmp_path),
        train_dataloader=dict(data, sampler=dict(type='DefaultSampler',
                                                 shuffle=True)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=[hook], default_scope='mmaction', log_level='WARNING',
        randomness=dict(seed=0))
    runner.train()
    assert the_hook(runner).evaluated == [1, 2]
    assert robust_steps(runner) == [1, 2]
    for i in (1, 2):
        report = load_report(str(tmp_path / 'robust' / f'iter_{i}' /
                                 'robustness.json'))
        assert report['run']['model'] == 'RobustMMRecognizer3D'
        assert report['run']['data'] == 'RobustEvalHook.dataloader'
        metrics = report['metrics']
        for key in ('pgd_imgs@1.0', 'pgd_imgs@4.0'):
            assert 0 <= metrics[f'robust/{key}'] <= metrics['robust/clean']
        assert 'robust/missing_heatmap_imgs' in metrics


@pytest.mark.parametrize('options, error', [
    (dict(interval=-1), 'interval must be an int >= 0'),
    (dict(interval=1.5), 'interval must be an int >= 0'),
    (dict(interval=0, after_train=False), 'never runs with interval=0'),
    (dict(after_train='yes'), "after_train must be True or False, got 'yes'"),
    (dict(dataloader='val'), "dataloader must be None.*got 'val'"),
    (dict(dataloader=dict(dataset=dict(type='X'))),
     r"dataloader config lacks \['sampler'\]"),
    (dict(report_dir=1), 'report_dir must be None or a str, got 1'),
    (dict(log_interval=0), 'log_interval must be None or an int >= 1'),
    (dict(certify=dict(tau='model')), r"certify: unknown keys \['tau'\]"),
    (dict(perturbations=[dict(type='PGD')]), "unknown perturbation type"),
    (dict(perturbations=[]), 'nothing to evaluate'),
])
def test_arguments_checked_in_init(options, error):
    kwargs = dict(perturbations=ATTACKS)
    kwargs.update(options)
    with pytest.raises(ValueError, match=error):
        RobustEvalHook(**kwargs)


@pytest.mark.parametrize('case, error', [
    ('no_val', 'dataloader=None evaluates the val dataloader, but this run '
     'has none'),
    ('modality', "'audo'"),
    ('priority', 'runs after CheckpointHook'),
    ('twice', 'holds 2 RobustEvalHook'),
])
def test_runner_checks_before_the_first_iteration(avdigits_tiny, tmp_path,
                                                  case, error):
    hooks = dict(no_val=[hook_entry()],
                 modality=[hook_entry([dict(type='MissingModality',
                                            modality='audo')])],
                 priority=[dict(hook_entry(), priority='LOWEST')],
                 twice=[hook_entry(), hook_entry()])[case]
    cfg = train_config(avdigits_tiny, tmp_path, hooks)
    if case == 'no_val':
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=error):
        runner.train()
    assert runner.iter == 0


# ---- DDP -------------------------------------------------------------------

DDP_ATTACKS = [
    dict(type='UniModalPGD', modality='audio', eps=[2.0, 8.0]),
    dict(type='UniModalFGM', modality='audio', eps=[2.0, 8.0]),
    dict(type='MultiModalFGM', eps=4.0),
    dict(type='MissingModality', modality='visual'),
    dict(type='GaussianNoise', modality='audio', sigma=2.0),
]
DDP_CERTIFY = dict(tau_source='estimate', tau_data='self', radii=[0, 2.0])
NUM_VAL = 7  # odd: the second rank gets one padded sample
DDP_EPOCHS = 10  # enough for accuracies that the attacks change


def write_ddp_config(path, data_root, work_dir):
    def split(name):
        return dict(ann_file=osp.join(data_root, f'avdigits_{name}.txt'),
                    data_prefix=dict(
                        img=osp.join(data_root, 'rawframes', name),
                        audio=osp.join(data_root, 'audio', name)))
    # Batch size 1 in the evaluated loader makes every sample's arithmetic
    # independent of how samples are split into batches and ranks.
    text = f"""
_base_ = [{osp.join(ROOT, 'configs', 'crmt_avdigits.py')!r}]
work_dir = {work_dir!r}
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        dataset=dict(**{split('train')!r}))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(indices={NUM_VAL}, **{split('test')!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs={DDP_EPOCHS}, val_interval=100)
optim_wrapper = dict(optimizer=dict(lr=1e-2))
custom_hooks = [dict(type='RobustEvalHook', perturbations={DDP_ATTACKS!r},
                     certify={DDP_CERTIFY!r}, worst_case='auto',
                     interval=0)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1))
log_level = 'WARNING'
"""
    with open(path, 'w') as f:
        f.write(text)


@pytest.mark.slow
def test_ddp_hook_equals_single_process(avdigits_tiny, tmp_path):
    """The hook under 2 gloo processes (tau estimated on each rank's shard,
    max over ranks) gives the metrics and curves that a single-process
    RobustTestLoop gives on the model it evaluated (the last epoch's
    checkpoint, saved right after the hook)."""
    config, work = str(tmp_path / 'cfg.py'), str(tmp_path / 'ddp')
    write_ddp_config(config, avdigits_tiny, work)
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '2'],
        env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tag = f'epoch_{DDP_EPOCHS}'
    assert os.listdir(osp.join(work, 'robust')) == [tag]  # interval=0
    ddp = load_report(osp.join(work, 'robust', tag, 'robustness.json'))
    assert ddp['run']['world_size'] == 2
    assert ddp['run']['num_samples'] == NUM_VAL
    assert ddp['certification']['status'] == 'on'

    single_dir = tmp_path / 'single'
    runner = robust_runner(avdigits_tiny, single_dir, DDP_ATTACKS,
                           certify=DDP_CERTIFY, indices=NUM_VAL, batch_size=1)
    runner.load_checkpoint(osp.join(work, f'{tag}.pth'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the DDP processes
    try:
        metrics = runner.test()
    finally:
        torch.set_num_threads(threads)
    single = load_report(str(single_dir / 'robustness.json'))
    robust = {k: v for k, v in metrics.items() if k.startswith('robust/')}
    assert len(robust) > 10
    assert ddp['metrics'] == robust == single['metrics']
    assert ddp['curves'] == single['curves']
    assert ddp['certification']['tau']['values'] == \
        single['certification']['tau']['values']
    assert robust['robust/clean'] > robust['robust/pgd_audio@8.0']
    # Rank 0's LocalVisBackend has the same scalars at step = epoch.
    path, = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    scalars = [json.loads(line) for line in open(path)]
    logged = [s for s in scalars if 'robust/clean' in s]
    assert len(logged) == 1 and logged[0]['step'] == DDP_EPOCHS
    assert {k: v for k, v in logged[0].items() if k != 'step'} == robust
