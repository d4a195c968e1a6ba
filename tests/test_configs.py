"""Every config in configs/ builds; each dataset family and each example
trains one iteration and/or runs its robust evaluation through the real
mmengine Runner, on tiny datasets the preparation tools write from
synthetic videos (``tools/data/make_synthetic_videos.py``).
"""
import glob
import math
import os.path as osp
import sys

import pytest
from mmaction.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from helpers import ROOT, cheap_evaluation, config_path
from helpers_fsdd_mnist import make_fsdd, make_mnist

sys.path.insert(0, osp.join(ROOT, 'tools', 'data'))
import make_synthetic_videos as synth  # noqa: E402
import prepare_fsdd_mnist as prep_fm  # noqa: E402
import prepare_ks_vggsound as prep_av  # noqa: E402
import prepare_ucf101 as prep_ucf  # noqa: E402

CONFIGS = sorted(
    osp.relpath(p, osp.join(ROOT, 'configs'))
    for p in glob.glob(osp.join(ROOT, 'configs', '*.py')) +
    glob.glob(osp.join(ROOT, 'configs', 'examples', '*.py')))
BASES = sorted(
    osp.relpath(p, osp.join(ROOT, 'configs'))
    for p in glob.glob(osp.join(ROOT, 'configs', '_base_', '**', '*.py'),
                       recursive=True))
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
#: Visual side of the shrunk test inputs (the configs use 224).
SIDE = 32


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory, avdigits_tiny):
    """Each config ``data_root`` -> a tiny dataset written by the tools."""
    raw = tmp_path_factory.mktemp('raw')
    out = tmp_path_factory.mktemp('prepared')
    ks = synth.make_audio_visual(str(raw / 'ks'), 'ks', seconds=2.0)
    prep_av.main([ks['videos'], str(out / 'ks'), '--name', 'ks', '--list',
                  f'train={ks["train"]}', '--list', f'test={ks["test"]}'])
    vgg = synth.make_audio_visual(str(raw / 'vgg'), 'vggsound',
                                  seconds=2.0)
    prep_av.main([vgg['videos'], str(out / 'vgg'), '--name', 'vggsound',
                  '--csv', vgg['csv']])
    ucf = synth.make_ucf101(str(raw / 'ucf'))
    prep_ucf.main([ucf['videos'], ucf['splits'], str(out / 'ucf'),
                   '--splits', '1', '--fps', '4'])
    fsdd = make_fsdd(str(raw / 'fsdd'), speakers=('ann', ), takes=7)
    mnist = make_mnist(str(raw / 'mnist'), per_digit=10)
    prep_fm.main(['--fsdd', fsdd, '--mnist', mnist, '--out',
                  str(out / 'fsdd_mnist'), '--val-takes', '1'])
    return {'data/kinetics_sounds': str(out / 'ks'),
            'data/fsdd_mnist': str(out / 'fsdd_mnist'),
            'data/vggsound': str(out / 'vgg'),
            'data/ucf101': str(out / 'ucf'),
            'data/avdigits': avdigits_tiny}


def redirect(value, roots):
    """Replace every ``data_root`` prefix in a (nested) config value."""
    if isinstance(value, str):
        for prefix, root in roots.items():
            if value.startswith(prefix + '/'):
                return root + value[len(prefix):]
        return value
    if isinstance(value, dict):
        return {k: redirect(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redirect(v, roots) for v in value)
    return value


def load(name, roots, work_dir=None):
    """A config with its data on the fixtures, single-process loaders."""
    cfg = Config.fromfile(config_path(name))
    for key in LOADERS:
        loader = cfg.get(key)
        if loader is not None:
            loader.dataset = redirect(loader.dataset, roots)
            loader.update(batch_size=2, num_workers=0,
                          persistent_workers=False)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    return cfg


def test_every_base_fragment_parses():
    for name in BASES:
        Config.fromfile(config_path(name))


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_model_pipeline_and_data(name, data_roots):
    """Model, datasets and pipelines build; one sample, preprocessed, has
    exactly the shapes the model's encoders expect."""
    cfg = load(name, data_roots)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    for key in LOADERS:
        dataset = DATASETS.build(cfg[key].dataset)
        batch = model.data_preprocessor(pseudo_collate([dataset[0]]),
                                        key == 'train_dataloader')
        split = model.split_inputs(batch['inputs'])
        assert set(split) == set(model.modalities), (name, key)


def shrink(cfg):
    """Test-sized run: 32x32 frames, 2 training clips (one iteration),
    1 test clip, one budget per perturbation, no phase switch, no
    checkpoints."""
    for key in LOADERS:
        dataset = cfg[key].dataset
        dataset.indices = 2 if key == 'train_dataloader' else 1
        for step in dataset.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (SIDE, SIDE)
    for encoder in cfg.model.encoders.values():
        if encoder.get('input_shape') is not None and \
                encoder.input_key in ('imgs', 'flows'):
            encoder.input_shape = (*encoder.input_shape[:2], SIDE, SIDE)
    for perturbation in cfg.test_cfg.get('perturbations', []):
        if isinstance(perturbation.get('eps'), list):
            perturbation.eps = perturbation.eps[:1]
    cheap_evaluation(cfg)
    cfg.train_cfg.update(max_epochs=1, val_interval=100)
    cfg.custom_hooks = []
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    return cfg


def assert_robust_metrics(cfg, metrics):
    """One accuracy per configured perturbation (one budget each after
    :func:`shrink`), besides the clean one."""
    assert 0.0 <= metrics['robust/clean'] <= 1.0
    expected = len(cfg.test_cfg.perturbations)
    attacked = [k for k in metrics if k.startswith('robust/')
                and ('@' in k or k.startswith('robust/missing'))
                and not k.startswith('robust/certified')
                and not k.startswith('robust/smoothing')
                and not k.startswith('robust/worst')
                and not k.startswith('robust/weakest')]
    assert len(attacked) == expected, attacked


# Kinetics-Sounds by default; VGGSound (309 classes) and UCF101 run the same
# code with other data and cost 1-2.5 min each on 2 cores, so they are slow.
@pytest.mark.parametrize('name', [
    'crmt_ks.py', pytest.param('crmt_vggsound.py', marks=pytest.mark.slow),
    pytest.param('crmt_ucf101.py', marks=pytest.mark.slow)])
def test_family_trains_and_evaluates_robustness(name, data_roots, tmp_path):
    """One CRMT step-1 iteration, then the configured robust evaluation."""
    cfg = shrink(load(name, data_roots, tmp_path))
    runner = Runner.from_cfg(cfg)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss)
    assert runner.iter == 1
    assert_robust_metrics(cfg, runner.test())
    assert osp.isfile(osp.join(str(tmp_path), 'robustness.json'))


def test_example_from_mmaction_bases_trains(data_roots, tmp_path):
    """Example (a): mmaction2 runtime, schedule and TSN-R50 backbone
    settings turned into a CRMT model."""
    cfg = shrink(load('examples/crmt_from_mmaction_bases.py', data_roots,
                      tmp_path))
    assert cfg.model.encoders.visual.backbone.depth == 50
    # No download here: the stock recipe's ImageNet weights are skipped.
    cfg.model.encoders.visual.backbone.pretrained = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    assert math.isfinite(
        runner.message_hub.get_scalar('train/loss').current())
    assert 'acc/fused_top1' in runner.test()


def test_example_adds_robust_evaluation(data_roots, tmp_path):
    """Example (b): only test_cfg/test_evaluator added to example (a)."""
    name = 'examples/robust_eval_for_existing_config.py'
    base = Config.fromfile(config_path('examples/crmt_from_mmaction_bases.py'))
    example = Config.fromfile(config_path(name))
    assert {k for k in set(base) | set(example)
            if base.get(k) != example.get(k)} == {'test_cfg',
                                                   'test_evaluator'}
    cfg = shrink(load(name, data_roots, tmp_path))
    cfg.model.encoders.visual.backbone.pretrained = None
    metrics = Runner.from_cfg(cfg).test()
    assert_robust_metrics(cfg, metrics)
