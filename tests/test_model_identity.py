"""Modality identity: the order of ``encoders`` in a config (e.g. the
key-sorted copy mmengine dumps into the work dir) never changes the model,
checkpoints record what they belong to, and mismatches are refused."""
import glob
import itertools
import os.path as osp

import pytest
import torch
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint, save_checkpoint

import crmt_mm  # noqa: F401
from crmt_mm.models.recognizers.crmt_recognizer import decode_identity
from helpers import config_path, tiny_config
from helpers_identity import ROOT, fixed_inputs, load_tool, shrink_inputs

init_default_scope('mmaction')

ALL_CONFIGS = sorted(
    osp.relpath(p, osp.join(ROOT, 'configs'))
    for p in glob.glob(osp.join(ROOT, 'configs', '*.py')) +
    glob.glob(osp.join(ROOT, 'configs', 'examples', '*.py')))
#: One config per model family in the default run (two ResNet-18s take
#: ~10 s per config on a loaded 2-core machine); all of them when slow.
FAST = ('crmt_avdigits.py', 'jt_avdigits.py', 'crmt_ks.py')
CONFIGS = [name if name in FAST else pytest.param(name, marks=pytest.mark.slow)
           for name in ALL_CONFIGS]


def build(model_cfg, seed=0):
    torch.manual_seed(seed)
    return MODELS.build(model_cfg).eval()


def outputs(model, x):
    with torch.no_grad():
        return model.fused_logits(x), model.modality_logits(x)


def assert_same_predictions(a, b, x):
    fused_a, per_a = outputs(a, x)
    fused_b, per_b = outputs(b, x)
    assert torch.equal(fused_a, fused_b)
    assert per_a.keys() == per_b.keys()
    for m in per_a:
        assert torch.equal(per_a[m], per_b[m]), m


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_round_trips_through_the_mmengine_dump(name, tmp_path):
    """build -> Config.dump -> rebuild: same state_dict keys, and the
    dumped config's model loads the original's state and gives
    bit-identical outputs on a fixed input."""
    cfg = Config.fromfile(config_path(name))
    dump = str(tmp_path / 'dumped.py')
    cfg.dump(dump)
    dumped = Config.fromfile(dump)
    assert sorted(dumped.model.encoders) == sorted(cfg.model.encoders)
    for c in (cfg, dumped):
        shrink_inputs(c.model)
    original, rebuilt = build(cfg.model), build(dumped.model, seed=1)
    state = original.state_dict()
    assert list(state) == list(rebuilt.state_dict())
    rebuilt.load_state_dict(state)
    assert_same_predictions(original, rebuilt, fixed_inputs(original))


# ---------------------------------------------------------------- orders
def conv(in_channels, size, key):
    return dict(input_key=key, feat_dim=16, input_shape=(in_channels, size,
                                                         size),
                backbone=dict(type='ConvEncoder', in_channels=in_channels,
                              input_size=(size, size), channels=(4, ),
                              feat_dim=16))


ENCODERS = dict(visual=conv(3, 8, 'imgs'), audio=conv(1, 12, 'audios'),
                flow=conv(2, 8, 'flows'))


def three_modalities(order, **head):
    return dict(type='CRMTRecognizer',
                encoders={m: ENCODERS[m] for m in order},
                head=dict(dict(type='CRMTHead', num_classes=4), **head))


def perturbed(model):
    """Distinct per-modality values everywhere a swap could hide."""
    with torch.no_grad():
        model.head.integration.copy_(torch.rand_like(model.head.integration)
                                     + 0.5)
        model.tau.copy_(torch.rand_like(model.tau) + 0.5)
    return model


def predict(model, x):
    keys = {m: e.input_key for m, e in model.encoders.items()}
    samples = [ActionDataSample().set_gt_label(0) for _ in range(2)]
    with torch.no_grad():
        out = model({keys[m]: v for m, v in x.items()}, samples,
                    mode='predict')
    return [s.pred_score for s in out]


@pytest.mark.parametrize('order', list(itertools.permutations(ENCODERS)),
                         ids='-'.join)
def test_any_encoder_order_loads_the_same_checkpoint(order, tmp_path):
    """A checkpoint written by a model configured visual, audio, flow loads
    through mmengine into a model configured in any order; predictions,
    per-modality scores, radii and integration rows are identical."""
    writer = perturbed(build(three_modalities(('visual', 'audio', 'flow'))))
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint(dict(state_dict=writer.state_dict()), path)
    reader = build(three_modalities(order), seed=7)
    load_checkpoint(reader, path)
    assert reader.modalities == ('audio', 'flow', 'visual')
    x = fixed_inputs(writer)
    assert_same_predictions(writer, reader, x)
    for want, got in zip(predict(writer, x), predict(reader, x)):
        assert want.keys() == got.keys() == {'fused', 'audio', 'flow',
                                             'visual'}
        for key in want:
            assert torch.equal(want[key], got[key]), key
    labels = torch.zeros(2, dtype=torch.long)
    assert torch.equal(writer.certified_radius(x, labels),
                       reader.certified_radius(x, labels))


def test_checkpoint_records_the_model_identity():
    model = build(three_modalities(('visual', 'flow', 'audio')))
    record = decode_identity(model.state_dict()['model_identity'])
    assert record == dict(
        modalities=[dict(name='audio', input_key='audios', feat_dim=16),
                    dict(name='flow', input_key='flows', feat_dim=16),
                    dict(name='visual', input_key='imgs', feat_dim=16)],
        num_classes=4, head=dict(type='CRMTHead', row_norm='orthonormal'))


@pytest.mark.parametrize('change, side', [
    (dict(head=dict(row_norm='center_unit')), "'row_norm': 'center_unit'"),
    (dict(input_key='depths'), "'input_key': 'depths'"),
])
def test_identity_mismatch_is_refused_naming_both_sides(change, side):
    writer = build(three_modalities(('visual', 'audio', 'flow')))
    cfg = three_modalities(('visual', 'audio', 'flow'),
                           **change.get('head', {}))
    if 'input_key' in change:
        cfg['encoders']['flow'] = dict(cfg['encoders']['flow'],
                                       input_key=change['input_key'])
    reader = build(cfg)
    with pytest.raises(ValueError, match='another model') as err:
        reader.load_state_dict(writer.state_dict())
    assert 'checkpoint' in str(err.value) and side in str(err.value)


def test_legacy_checkpoint_is_refused_then_converted(tmp_path):
    """Today's format (blocks in config order, no record) is never loaded
    silently; tools/convert_checkpoint.py with the original order fixes it."""
    order = ('visual', 'flow', 'audio')
    model = perturbed(build(three_modalities(order)))
    state = model.state_dict()
    # The same weights as an old crmt_mm wrote them: config order.
    index = [model.modalities.index(m) for m in order]
    dims = [model.encoders[m].feat_dim for m in model.modalities]
    blocks = state['head.fc.weight'].split(dims, dim=1)
    legacy = {k: v for k, v in state.items() if k != 'model_identity'}
    legacy['head.fc.weight'] = torch.cat([blocks[i] for i in index], 1)
    legacy['head.integration'] = state['head.integration'][index]
    legacy['tau'] = state['tau'][index]
    old = str(tmp_path / 'old.pth')
    torch.save(dict(state_dict=legacy, meta=dict(epoch=3)), old)
    fresh = build(three_modalities(order), seed=3)
    with pytest.raises(ValueError, match='no model_identity record.*'
                       'convert_checkpoint.py'):
        load_checkpoint(fresh, old)
    config = tmp_path / 'model.py'
    config.write_text(f'model = {three_modalities(order)!r}\n')
    new = str(tmp_path / 'new.pth')
    convert = load_tool('convert_checkpoint')
    with pytest.raises(ValueError, match='must name each modality'):
        convert.main([str(config), old, new, '--order', 'visual,audio'])
    convert.main([str(config), old, new, '--order', ','.join(order)])
    load_checkpoint(fresh, new)
    assert_same_predictions(model, fresh, fixed_inputs(model))
    assert torch.equal(fresh.tau, model.tau)


# ---------------------------------------------------------------- a run
def test_plain_test_of_the_work_dir_config_gives_the_last_validation(
        avdigits_tiny, tmp_path):
    """Fast variant: one JT epoch, then tools/test.py with a config that
    only swaps the robust test loop of the dumped config for a plain one."""
    work_dir = str(tmp_path / 'run')
    cfg = tiny_config('jt_avdigits.py', avdigits_tiny, work_dir)
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    last_val = runner.message_hub.get_scalar('val/acc/fused_top1').current()
    dumped = osp.join(work_dir, 'jt_avdigits.py')
    assert list(Config.fromfile(dumped).model.encoders) == ['audio',
                                                             'visual']
    plain = tmp_path / 'plain.py'
    plain.write_text(f'_base_ = [{dumped!r}]\n'
                     "test_cfg = dict(_delete_=True, type='TestLoop')\n"
                     "test_evaluator = dict(_delete_=True, type='AccMetric')"
                     '\n')
    metrics = load_tool('test').main([
        str(plain), osp.join(work_dir, 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'test')])
    assert metrics['acc/fused_top1'] == last_val


@pytest.mark.slow
def test_tools_test_on_the_work_dir_config_gives_the_last_validation(
        avdigits_tiny, tmp_path):
    """Train a tiny CRMT run (both phases), then run tools/test.py on the
    config mmengine dumped into the work dir (encoders key-sorted) and the
    final checkpoint: exactly the run's last validation accuracy."""
    work_dir = str(tmp_path / 'run')
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, work_dir)
    cfg.train_cfg.update(max_epochs=2, val_interval=2)
    cfg.custom_hooks[0].switch_epoch = 1
    runner = Runner.from_cfg(cfg)
    runner.train()
    last_val = runner.message_hub.get_scalar('val/acc/fused_top1').current()
    dumped = osp.join(work_dir, 'crmt_avdigits.py')
    assert list(Config.fromfile(dumped).model.encoders) == ['audio',
                                                             'visual']
    metrics = load_tool('test').main([
        dumped, osp.join(work_dir, 'epoch_2.pth'), '--work-dir',
        str(tmp_path / 'test')])
    assert metrics['acc/fused_top1'] == last_val
