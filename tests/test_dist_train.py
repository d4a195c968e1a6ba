"""A 2-process gloo run of tools/dist_train.sh through both CRMT phases."""
import os
import os.path as osp
import subprocess
import sys

from crmt_mm.compat import safe_torch_load
from helpers import ROOT, free_port


def write_config(path, data_root, work_dir):
    def split(name):
        return dict(ann_file=osp.join(data_root, f'avdigits_{name}.txt'),
                    data_prefix=dict(
                        img=osp.join(data_root, 'rawframes', name),
                        audio=osp.join(data_root, 'audio', name)))
    text = f"""
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
"""
    with open(path, 'w') as f:
        f.write(text)


def test_dist_train_two_gloo_processes(avdigits_tiny, tmp_path):
    config = str(tmp_path / 'cfg.py')
    work_dir = str(tmp_path / 'work')
    write_config(config, avdigits_tiny, work_dir)
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '2'],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = safe_torch_load(osp.join(work_dir, 'epoch_2.pth'))['state_dict']
    assert int(state['phase']) == 2
    assert (state['tau'] > 0).all()
    assert (state['head.integration'] >= 0).all()
