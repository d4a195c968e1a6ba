"""tools/gpu_check.sh: runs anywhere, skips the GPU parts without CUDA."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from helpers import ROOT


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_gpu_check_on_cpu_skips_with_a_clear_message(tmp_path):
    out = tmp_path / 'check.json'
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'gpu_check.sh'), '--out', str(out)],
        env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
        text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'no CUDA device' in proc.stdout
    result = json.loads(out.read_text())
    gpu_check = load_tool('gpu_check')
    assert result['cuda'] is False
    assert set(result['steps']) == set(gpu_check.STEPS)
    assert all(s['status'] == 'skipped' and 'no CUDA' in s['reason']
               for s in result['steps'].values())


def test_gpu_check_rejects_unknown_steps():
    gpu_check = load_tool('gpu_check')
    with pytest.raises(SystemExit):
        gpu_check.parse_args(['--steps', 'cuda_tests,warp_drive'])


def test_train_amp_command_builds_the_intended_config(tmp_path):
    # The GPU run cannot be tried here: check that its command line merges
    # into the config it means (50 step-1 iterations, AMP, batched tau).
    gpu_check, train = load_tool('gpu_check'), load_tool('train')
    from mmengine.config import Config
    commands = gpu_check.build_commands(str(tmp_path))
    argv = commands['train_amp'][2:]
    args = train.parse_args(argv)
    cfg = train.merge_args(Config.fromfile(osp.join(ROOT, args.config)), args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.train_cfg.max_epochs == 2
    assert cfg.train_dataloader.batch_size == 25  # 1258 / 25 -> 51 iters
    hook = cfg.custom_hooks[0]
    assert hook.type == 'CRMTPhaseSwitchHook' and hook.switch_epoch == 1
    assert hook.tau_class_chunk == 'auto'
    assert cfg.train_dataloader.dataset.ann_file == str(
        tmp_path / 'avdigits' / 'avdigits_train.txt')
    assert commands['robust_eval'][3].endswith('epoch_2.pth')


def test_robust_eval_command_builds_the_intended_config(tmp_path):
    gpu_check, test = load_tool('gpu_check'), load_tool('test')
    from mmengine.config import Config
    argv = gpu_check.build_commands(str(tmp_path))['robust_eval'][2:]
    args = test.parse_args(argv)
    cfg = test.merge_args(Config.fromfile(osp.join(ROOT, args.config)), args)
    assert cfg.test_cfg.type == 'RobustTestLoop'
    assert cfg.test_dataloader.dataset.ann_file == str(
        tmp_path / 'avdigits' / 'avdigits_test.txt')
