"""``tools/test.py --show-dir`` on a multi-modal model writes one image per
test sample (frames and spectrogram rows with the predictions) through
MultiModalVisualizationHook; ``--show`` is refused before the run."""
import glob
import os.path as osp
import sys

import cv2
import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint

from crmt_mm.engine.hooks.multimodal_visualization_hook import ROW_HEIGHT
from helpers import ROOT, tiny_config

sys.path.insert(0, osp.join(ROOT, 'tools'))
import test as test_tool  # noqa: E402


@pytest.fixture(scope='module')
def files(avdigits_tiny, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('show'))
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, work)
    cfg.test_cfg = dict(type='TestLoop')
    cfg.test_evaluator = dict(type='AccMetric')
    config = osp.join(work, 'cfg.py')
    cfg.dump(config)
    init_default_scope('mmaction')
    model = MODELS.build(Config.fromfile(config).model)
    checkpoint = osp.join(work, 'model.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), checkpoint)
    return config, checkpoint, work


def test_show_dir_writes_frames_and_spectrogram(files, tmp_path):
    config, checkpoint, _ = files
    out = str(tmp_path / 'vis')
    metrics = test_tool.main([config, checkpoint, '--work-dir',
                              str(tmp_path / 'work'), '--show-dir', out,
                              '--interval', '2'])
    assert 'acc/fused_top1' in metrics
    images = sorted(glob.glob(osp.join(out, '*.png')))
    assert len(images) == 5  # 10 test clips, every 2nd
    image = cv2.imread(images[0])
    # header + (label band + row) for each of the two modalities
    assert image.shape[0] == 20 + 2 * (20 + ROW_HEIGHT)
    # The frame row holds the 3 frames side by side (square 32x32 -> 128).
    assert image.shape[1] >= 3 * ROW_HEIGHT
    assert image.std() > 0


def test_show_is_refused_before_the_run(files):
    config, checkpoint, work = files
    args = test_tool.parse_args([config, checkpoint, '--show'])
    with pytest.raises(SystemExit, match='--show-dir'):
        test_tool.merge_args(Config.fromfile(config), args)


def test_hook_draws_each_layout():
    """NCTHW frames, NCHW segments, 1-channel maps and 2-channel flow."""
    from crmt_mm.engine.hooks import MultiModalVisualizationHook
    hook = MultiModalVisualizationHook(out_dir='/nonexistent', max_frames=4)
    for x, fmt, tiles in ((torch.rand(1, 3, 3, 32, 32) * 255, 'NCTHW', 3),
                          (torch.rand(5, 3, 16, 32) * 255, 'NCHW', 4),
                          (torch.randn(1, 1, 64, 128), 'NCHW', 1),
                          (torch.rand(1, 2, 2, 32, 32) * 255, 'NCTHW', 4)):
        row = hook._row('k', x, fmt)
        height, width = x.shape[-2:]
        if x.shape[-3] == 1:  # a spectrogram: time along x
            height, width = width, height
        width = width * ROW_HEIGHT // height
        assert row.shape == (20 + ROW_HEIGHT, tiles * width, 3), (fmt, x.shape)
    with pytest.raises(ValueError, match='interval'):
        MultiModalVisualizationHook(out_dir='x', interval=0)
