"""tools/test.py: mmaction2's flags, and a progress hook for plain loops."""
import os.path as osp

import pytest
from mmengine.config import Config

from helpers import load_tool


def test_test_tool_merges_arguments_like_mmaction2():
    tool = load_tool('test')
    args = tool.parse_args([
        'configs/x.py', 'ckpt.pth', '--dump', 'out.pkl', '--show-dir', 'vis',
        '--cfg-options', 'test_dataloader.batch_size=2'])
    cfg = Config(dict(test_evaluator=dict(type='AccMetric'),
                      test_dataloader=dict(batch_size=8),
                      default_hooks=dict()))
    with pytest.warns(UserWarning, match='--show/--show-dir ignored'):
        cfg = tool.merge_args(cfg, args)
    assert cfg.test_evaluator == [
        dict(type='AccMetric'),
        dict(type='DumpResults', out_file_path='out.pkl')]
    assert cfg.test_dataloader.batch_size == 2
    assert (cfg.load_from, cfg.launcher) == ('ckpt.pth', 'none')
    assert cfg.work_dir == osp.join('./work_dirs', 'x')
    assert cfg.custom_hooks == [dict(type='EvalProgressHook')]
    with pytest.raises(ValueError, match='.pkl'):
        tool.merge_args(cfg, tool.parse_args(['x.py', 'c', '--dump', 'a']))


def test_progress_hook_only_where_no_progress_is_printed():
    tool = load_tool('test')
    robust = Config(dict(test_cfg=dict(type='RobustTestLoop')))
    tool.add_progress_hook(robust)
    assert not robust.get('custom_hooks')  # the robust loop prints its own
    mine = Config(dict(custom_hooks=[dict(type='EvalProgressHook',
                                          every=2)]))
    tool.add_progress_hook(mine)
    assert mine.custom_hooks == [dict(type='EvalProgressHook', every=2)]
