"""CRMTRecognizer with mmaction2 backbones, losses and input checks."""
import pytest
import torch
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmengine.registry import init_default_scope

import crmt_mm  # noqa: F401
from crmt_mm.models.train_perturbations import batchnorm_policy

init_default_scope('mmaction')

RESNET18 = dict(type='ResNet', depth=18, pretrained=None, norm_eval=False)
SHAPES = dict(visual=(3, 3, 32, 32), audio=(1, 64, 32), flow=(2, 3, 32, 32))
KEYS = dict(visual='imgs', audio='audios', flow='flows')


def encoder(name):
    return dict(input_key=KEYS[name], feat_dim=512,
                temporal='none' if name == 'audio' else 'fold',
                input_shape=SHAPES[name],
                backbone=dict(RESNET18, in_channels=SHAPES[name][0]))


def build(modalities=('visual', 'audio', 'flow'), head='CRMTHead',
          train_perturbation=None, **loss):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='CRMTRecognizer',
        encoders={m: encoder(m) for m in modalities},
        head=dict(type=head, num_classes=5),
        loss=dict(type='CRMTMarginLoss', **loss),
        train_perturbation=train_perturbation))


def batch(modalities, n=2, labels=None):
    inputs = {KEYS[m]: torch.randn((n, 1) + SHAPES[m]) for m in modalities}
    labels = labels if labels is not None else list(range(n))
    samples = [ActionDataSample().set_gt_label(y) for y in labels]
    return inputs, samples


def test_resnet18_visual_audio_flow_loss_and_predict():
    mods = ('visual', 'audio', 'flow')
    model = build(mods)
    inputs, samples = batch(mods)
    losses = model(inputs, samples, mode='loss')
    assert {'loss_cls', 'loss_margin', 'acc_fused', 'acc_visual',
            'acc_audio', 'acc_flow'} <= set(losses)
    (losses['loss_cls'] + losses['loss_margin']).backward()
    model.eval()
    with torch.no_grad():
        out = model(inputs, samples, mode='predict')
    scores = out[0].pred_score
    assert set(scores) == {'fused', *mods}
    for score in scores.values():
        assert score.shape == (5,)
        assert torch.allclose(score.sum(), torch.tensor(1.0), atol=1e-5)


@pytest.mark.parametrize('variant', [
    dict(type='MultiModalPGD', eps=0.1, steps=2), dict(type='Mixup')])
def test_at_and_mix_variants_train(variant):
    mods = ('visual', 'audio')
    model = build(mods, train_perturbation=variant)
    inputs, samples = batch(mods, n=3, labels=[0, 1, 2])
    losses = model(inputs, samples, mode='loss')
    assert torch.isfinite(losses['loss_cls'] + losses['loss_margin'])
    params = [p for p in model.parameters() if p.grad is not None]
    assert not params  # the attack wrote no parameter gradient


@pytest.mark.parametrize('policy,moved', [('frozen_stats', False),
                                          ('train', True)])
def test_attack_batchnorm_policy(policy, moved):
    mods = ('visual', 'audio')
    model = build(mods)
    inputs, _ = batch(mods, n=3)
    before = {k: v.clone() for k, v in model.state_dict().items()
              if 'running' in k or 'num_batches' in k}
    with batchnorm_policy(model, policy):
        model.fused_logits(model.split_inputs(inputs))  # batch statistics
    after = model.state_dict()
    changed = any(not torch.equal(v, after[k]) for k, v in before.items())
    assert changed == moved
    assert model.training


def test_wrong_shapes_labels_and_keys_are_rejected():
    mods = ('visual', 'audio')
    model = build(mods)
    inputs, samples = batch(mods)
    bad = dict(inputs, audios=torch.randn(2, 1, 1, 32, 64))
    with pytest.raises(ValueError, match=r"modality 'audio'.*1, 64, 32"):
        model(bad, samples, mode='loss')
    with pytest.raises(ValueError, match='labels out of range'):
        model(inputs, batch(mods, labels=[0, 7])[1], mode='loss')
    with pytest.raises(ValueError, match='collect_keys'):
        model({'imgs': inputs['imgs']}, samples, mode='loss')
    with pytest.raises(ValueError, match='at least 2 modalities'):
        build(('visual',))
    with pytest.raises(ValueError, match='encoders.visual'):
        MODELS.build(dict(type='CRMTRecognizer',
                          encoders=dict(visual=dict(encoder('visual'),
                                                    colour=True),
                                        audio=encoder('audio')),
                          head=dict(type='CRMTHead', num_classes=5)))


def test_jt_head_has_no_phase_two():
    model = build(('visual', 'audio'), head='ConcatHead', rho=0.0)
    assert torch.equal(model.integration_weights(), torch.ones(2, 5))
    with pytest.raises(RuntimeError, match='CRMTHead'):
        model.freeze_for_phase2()
