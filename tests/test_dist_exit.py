"""The end of a distributed tools/train.py or test.py run: every rank exits
with status 0 (docs/reliability.md, section 2, "Clean exit").

Before the fix a rank sometimes died with SIGABRT ("terminate called
without an active exception") at interpreter exit: a gloo worker thread,
still alive because torch keeps the process group referenced after DDP,
freed the Python object of a tensor of the last collective while Python was
finalizing. ``crmt_mm.engine.launch.end_run`` tears the group down and
``exit_process`` leaves without finalizing.
"""
import os
import os.path as osp
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch.distributed as dist

from crmt_mm.engine import teardown as launch
from helpers import ROOT, free_port
from helpers_slurm import install_standins

#: Train-then-test pairs of the stress test (each: 2 gloo processes).
STRESS_RUNS = 10


def test_end_run_destroys_the_process_group(monkeypatch):
    monkeypatch.setattr(launch, '_TORN_DOWN', False)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:'
                            f'{free_port()}', rank=0, world_size=1)
    try:
        launch.end_run(SimpleNamespace())  # a runner without loops
        assert not dist.is_initialized()
        assert launch._TORN_DOWN
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


EXIT_SCRIPT = """
import logging, sys, torch, torch.distributed as dist
from types import SimpleNamespace
from crmt_mm.engine.teardown import end_run, exit_process
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
if sys.argv[2] == 'dist':
    dist.init_process_group('gloo', init_method='tcp://127.0.0.1:' +
                            sys.argv[3], rank=0, world_size=1)
    t = torch.ones(3)
    dist.all_reduce(t)
end_run(SimpleNamespace())
logging.getLogger('x').info('logged before exit')
print('printed before exit', end='')
exit_process()
print(' and after', end='')
"""


@pytest.mark.parametrize('mode', ['dist', 'single'])
def test_exit_process_flushes_and_exits_zero(tmp_path, mode):
    """After a torn-down group: status 0, buffered stdout and the log file
    written, nothing after exit_process runs. Without one it returns."""
    log = str(tmp_path / 'log.txt')
    proc = subprocess.run(
        [sys.executable, '-c', EXIT_SCRIPT, log, mode, str(free_port())],
        env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
        text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ('printed before exit' if mode == 'dist' else
                           'printed before exit and after')
    with open(log) as f:
        assert 'logged before exit' in f.read()


def write_stress_config(path: str, data_root: str, work_dir: str) -> str:
    """2 epochs (switch at 1) on the tiny data, then a cheap robust test."""
    from test_slurm import write_config
    write_config(path, data_root, work_dir)
    return path


@pytest.mark.slow
def test_two_process_train_and_test_always_exit_zero(avdigits_tiny,
                                                     tmp_path):
    """STRESS_RUNS times: a 2-process train (both CRMT phases) then a
    2-process robust test of its checkpoint, alternately through torchrun
    (dist_train.sh/dist_test.sh) and the srun stand-in (slurm_train.sh/
    slurm_test.sh). Any non-zero exit fails, with the tail of its output."""
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PATH=install_standins(str(tmp_path / 'bin')))
    for key in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST',
                'SLURM_LOCALID', 'MASTER_ADDR', 'MASTER_PORT', 'RANK',
                'WORLD_SIZE', 'LOCAL_RANK'):
        env.pop(key, None)
    failures = []
    for run in range(STRESS_RUNS):
        work = str(tmp_path / f'train{run}')
        config = write_stress_config(str(tmp_path / f'run{run}.py'),
                                     avdigits_tiny, work)
        checkpoint = osp.join(work, 'epoch_2.pth')
        test_work = str(tmp_path / f'test{run}')
        if run % 2 == 0:
            steps = [('dist_train.sh', [config, '2', '--seed', '0']),
                     ('dist_test.sh', [config, checkpoint, '2',
                                       '--work-dir', test_work])]
        else:
            steps = [('slurm_train.sh', ['part', 'job', config, work,
                                         '--seed', '0']),
                     ('slurm_test.sh', ['part', 'job', config, checkpoint,
                                        '--work-dir', test_work])]
        for script, args in steps:
            port = str(free_port())
            proc = subprocess.run(
                ['bash', osp.join(ROOT, 'tools', script)] + args,
                env=dict(env, PORT=port, MASTER_PORT=port, GPUS='2',
                         GPUS_PER_NODE='2', GRES=''),
                capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                failures.append(f'run {run} {script}: exit '
                                f'{proc.returncode}\n{proc.stderr[-3000:]}')
                break
    assert not failures, textwrap.indent('\n'.join(failures), '  ') + \
        f'\n{len(failures)} of {STRESS_RUNS} runs failed'
