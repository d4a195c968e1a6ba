"""tools/slurm_train.sh and slurm_test.sh with stand-ins for srun and
scontrol (tests/helpers_slurm.py): mmaction2's interface, mmengine's slurm
launcher on CPU with gloo, the same result as the torchrun run, and
launcher errors that name the launcher."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from crmt_mm.compat import safe_torch_load
from crmt_mm.engine.launch import cpu_dist_env, use_cpu_distributed
from helpers import ROOT, free_port
from helpers_slurm import install_standins

SLURM_KEYS = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST',
              'SLURM_LOCALID', 'MASTER_ADDR', 'MASTER_PORT', 'RANK',
              'WORLD_SIZE', 'LOCAL_RANK')


def run_script(name, args, env):
    return subprocess.run(['bash', osp.join(ROOT, 'tools', name)] + args,
                          env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize('script,last', [('slurm_train.sh', 'WORK_DIR'),
                                         ('slurm_test.sh', 'CHECKPOINT')])
def test_scripts_pass_mmaction2_interface_to_srun(script, last, tmp_path):
    record = str(tmp_path / 'srun.json')
    env = dict(os.environ, PATH=install_standins(str(tmp_path / 'bin')),
               SRUN_RECORD=record, SRUN_DRY='1', GPUS='16',
               GPUS_PER_NODE='8', CPUS_PER_TASK='3',
               SRUN_ARGS='--quotatype=auto --exclusive', PYTHON='py')
    proc = run_script(script, ['part', 'job', 'cfg.py', 'fourth',
                               '--cfg-options', 'a=1'], env)
    assert proc.returncode == 0, proc.stderr
    with open(record) as f:
        called = json.load(f)
    assert called['options'] == {
        'partition': 'part', 'job-name': 'job', 'gres': 'gpu:8',
        'ntasks': '16', 'ntasks-per-node': '8', 'cpus-per-task': '3',
        'kill-on-bad-exit': '1', 'quotatype': 'auto', 'exclusive': True}
    tool = 'train.py' if last == 'WORK_DIR' else 'test.py'
    command = called['command']
    assert command[:3] == ['py', '-u', osp.join(ROOT, 'tools', tool)]
    expected = (['cfg.py', '--work-dir=fourth'] if last == 'WORK_DIR' else
                ['cfg.py', 'fourth'])
    assert command[3:] == expected + ['--launcher=slurm', '--cfg-options',
                                      'a=1']
    # Too few arguments: the usage line, no srun call.
    short = run_script(script, ['part', 'job', 'cfg.py'], env)
    assert short.returncode == 2 and last in short.stderr


def test_slurm_env_is_derived_like_mmengine(tmp_path, monkeypatch):
    for key in SLURM_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('PATH', install_standins(str(tmp_path / 'bin')))
    monkeypatch.setenv('SLURM_PROCID', '3')
    monkeypatch.setenv('SLURM_NTASKS', '4')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    monkeypatch.setenv('SLURM_NODELIST', 'node[1-2]')
    cpu_dist_env('slurm', port=12345)
    assert {k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK',
                                       'MASTER_ADDR', 'MASTER_PORT')} == {
        'RANK': '3', 'WORLD_SIZE': '4', 'LOCAL_RANK': '1',
        'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': '12345'}


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU launcher path')
@pytest.mark.parametrize('launcher', ['pytorch', 'slurm', 'mpi'])
def test_launcher_errors_name_the_launcher(launcher, monkeypatch, tmp_path):
    for key in SLURM_KEYS:
        monkeypatch.delenv(key, raising=False)
    cfg = Config(dict(launcher=launcher, env_cfg=dict(dist_cfg=dict())))
    with pytest.raises(RuntimeError, match=f'--launcher {launcher} '):
        use_cpu_distributed(cfg)
    if launcher == 'slurm':  # srun's variables, but no way to MASTER_ADDR
        monkeypatch.setenv('PATH', str(tmp_path))
        for key, value in (('SLURM_PROCID', '0'), ('SLURM_NTASKS', '1'),
                           ('SLURM_NODELIST', 'n1')):
            monkeypatch.setenv(key, value)
        with pytest.raises(RuntimeError, match='--launcher slurm: '
                           'MASTER_ADDR.*scontrol'):
            use_cpu_distributed(cfg)


def write_config(path, data_root, work_dir):
    def split(name):
        return dict(ann_file=osp.join(data_root, f'avdigits_{name}.txt'),
                    data_prefix=dict(
                        img=osp.join(data_root, 'rawframes', name),
                        audio=osp.join(data_root, 'audio', name)))
    with open(path, 'w') as f:
        f.write(f"""
_base_ = [{osp.join(ROOT, 'configs', 'crmt_avdigits.py')!r}]
work_dir = {work_dir!r}
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        dataset=dict(**{split('train')!r}))
val_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                      dataset=dict(**{split('test')!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=100)
custom_hooks = [dict(type='CRMTPhaseSwitchHook', switch_epoch=1,
                     lr_factor=1.0, weight_decay=1e-2)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1))
log_level = 'WARNING'
# The launcher is under test, not the evaluation: a test-sized ensemble,
# reference PGD, missing modality and smoothing (the config's paper-grade
# ensemble takes minutes per clip on a CPU).
test_cfg = dict(
    perturbations=[
        dict(type='MultiModalAutoAttack', version='standard', norm='L2',
             modality='audio', eps=[0.5, 1.0], steps=2, n_targets=1,
             queries=10),
        dict(type='UniModalPGD', modality='audio', eps=[0.5]),
        dict(type='MissingModality', modality='visual')],
    smoothing=[dict(type='GaussianSmoothingCertifier', modality='audio',
                    sigma=0.25, n0=8, n=32, alpha=0.001, batch_size=16,
                    seed=0, subset=dict(size=4, seed=0))])
""")


@pytest.mark.slow
def test_slurm_run_equals_torchrun_run(avdigits_tiny, tmp_path):
    """Both CRMT phases on 2 gloo processes, started by srun (stand-in)
    and by torchrun: the same final weights, tau and test metrics."""
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PATH=install_standins(str(tmp_path / 'bin')))
    for key in SLURM_KEYS:
        env.pop(key, None)
    runs = {}
    for name in ('slurm', 'torchrun'):
        work = str(tmp_path / name)
        config = str(tmp_path / f'{name}.py')
        write_config(config, avdigits_tiny, work)
        if name == 'slurm':
            env_run = dict(env, GPUS='2', GPUS_PER_NODE='2', GRES='',
                           MASTER_PORT=str(free_port()))
            args = ['slurm_train.sh', ['part', 'job', config, work,
                                       '--seed', '0']]
        else:
            env_run = dict(env, PORT=str(free_port()))
            args = ['dist_train.sh', [config, '2', '--seed', '0']]
        proc = run_script(*args, env_run)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = safe_torch_load(osp.join(work, 'epoch_2.pth'))
    slurm, torchrun = runs['slurm'], runs['torchrun']
    assert int(slurm['state_dict']['phase']) == 2
    assert slurm['state_dict'].keys() == torchrun['state_dict'].keys()
    for key, value in slurm['state_dict'].items():
        assert torch.equal(value, torchrun['state_dict'][key]), key

    # slurm_test.sh on the slurm checkpoint: the metrics of dist_test.sh.
    metrics = {}
    checkpoint = osp.join(str(tmp_path / 'slurm'), 'epoch_2.pth')
    config = str(tmp_path / 'slurm.py')
    for name in ('slurm', 'torchrun'):
        work = str(tmp_path / f'test_{name}')
        if name == 'slurm':
            proc = run_script('slurm_test.sh', [
                'part', 'job', config, checkpoint, '--work-dir', work],
                dict(env, GPUS='2', GPUS_PER_NODE='2', GRES='',
                     MASTER_PORT=str(free_port())))
        else:
            proc = run_script('dist_test.sh', [
                config, checkpoint, '2', '--work-dir', work],
                dict(env, PORT=str(free_port())))
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(osp.join(work, 'robustness.json')) as f:
            metrics[name] = json.load(f)['metrics']
    assert metrics['slurm'] == metrics['torchrun']
