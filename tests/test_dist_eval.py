"""Robust evaluation under 2-process CPU DDP equals a single process."""
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import torch
from mmengine.runner import Runner

from crmt_mm.certification import estimate_tau_on_loader
from helpers import ROOT, free_port, tiny_config

NUM_TEST = 7  # odd: the second rank gets one padded sample


def write_config(path, data_root, batch_size):
    """A test config on NUM_TEST AV-Digits clips with a RobustTestLoop."""
    split = 'test'
    text = f"""
_base_ = [{osp.join(ROOT, 'configs', 'crmt_avdigits.py')!r}]
test_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(
        ann_file={osp.join(data_root, f'avdigits_{split}.txt')!r},
        data_prefix=dict(img={osp.join(data_root, 'rawframes', split)!r},
                         audio={osp.join(data_root, 'audio', split)!r}),
        indices={NUM_TEST}))
test_cfg = dict(
    _delete_=True, type='RobustTestLoop',
    perturbations=[
        dict(type='UniModalPGD', modality='audio', eps=[0.5, 1.0]),
        dict(type='MultiModalFGM', eps=1.0),
        dict(type='MissingModality', modality='visual'),
        dict(type='GaussianNoise', modality='audio', sigma=0.5)],
    certify=dict(radii=[0, 0.5]))
test_evaluator = [dict(type='AccMetric'), dict(type='RobustAccMetric')]
log_level = 'WARNING'
"""
    with open(path, 'w') as f:
        f.write(text)


def test_ddp_robust_metrics_equal_single_process(avdigits_tiny, tmp_path):
    # A checkpoint with tau (init weights; tau estimated on training data).
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path))
    runner = Runner.from_cfg(cfg)
    model = runner.model.eval()
    model.tau.copy_(estimate_tau_on_loader(
        model, runner.train_dataloader, max_batches=1)['tau'])
    runner.save_checkpoint(str(tmp_path), 'ckpt.pth', save_optimizer=False,
                           save_param_scheduler=False)
    checkpoint = osp.join(str(tmp_path), 'ckpt.pth')
    config = osp.join(str(tmp_path), 'robust_test.py')
    # Batch size 1 makes every sample's arithmetic (and noise draw)
    # independent of how samples are split into batches and ranks.
    write_config(config, avdigits_tiny, batch_size=1)

    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1')
    runs = {}
    for name, command in (
            ('single', [sys.executable, osp.join(ROOT, 'tools', 'test.py')]),
            ('ddp', ['bash', osp.join(ROOT, 'tools', 'dist_test.sh')])):
        work = osp.join(str(tmp_path), name)
        args = [config, checkpoint] + (['2'] if name == 'ddp' else []) + [
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
            dump = pickle.load(f)
        results[name] = report, dump

    single, ddp = results['single'], results['ddp']
    assert single[0]['run']['world_size'] == 1
    assert ddp[0]['run']['world_size'] == 2
    assert single[0]['run']['num_samples'] == ddp[0]['run'][
        'num_samples'] == NUM_TEST
    assert len(single[0]['metrics']) > 10
    assert single[0]['metrics'] == ddp[0]['metrics']
    assert single[0]['curves'] == ddp[0]['curves']
    # Per sample, in dataset order: the padded duplicate is gone.
    assert len(single[1]) == len(ddp[1]) == NUM_TEST
    for a, b in zip(single[1], ddp[1]):
        assert a['robust_record'] == b['robust_record']
        assert all(torch.equal(a['pred_score'][k], b['pred_score'][k])
                   for k in a['pred_score'])
