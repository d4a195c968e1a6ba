"""Training perturbations (recognizer ``train_perturbation``) and the pure
step-1 loss: same losses as the pre-change loss variants, clear errors."""
import os.path as osp

import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import crmt_mm  # noqa: F401
from crmt_mm.models import TRAIN_PERTURBATIONS, build_train_perturbation
from crmt_mm.models.losses import CRMTMarginLoss
from crmt_mm.models.train_perturbations import batchnorm_policy

init_default_scope('mmaction')
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODEL_CFG = osp.join(ROOT, 'configs', '_base_', 'models', 'crmt_avdigits.py')

PGD = dict(type='MultiModalPGD', eps=0.1, steps=5, bn='frozen_stats',
           clamp=False)
#: name -> (loss rho, train_perturbation, expected losses, expected sum of
#: the BatchNorm running statistics after the step). The losses were first
#: checked equal to the pre-change code (commit 53c5b58, where these were
#: ``loss=dict(variant='AT', at_eps=..., at_steps=..., at_bn=...,
#: at_clamp=...)`` and ``variant='Mix', mix_alpha=...``) on the inputs of
#: ``fixed_batch`` with the same seeds. The values below were then re-taken
#: once when encoders started being built in sorted modality order (audio
#: before visual), which changes the seeded initial weights, not the losses.
CASES = {
    'jt': (2.0, None, dict(loss_cls=2.309964418411255,
                           loss_margin=6.204269886016846), 118.57445647771237),
    'at': (2.0, PGD, dict(loss_cls=2.320502281188965,
                          loss_margin=6.319432735443115), 118.57442399149295),
    'at_train_clamp': (2.0, dict(type='MultiModalPGD', eps=0.5, steps=3,
                                 bn='train', clamp=True),
                       dict(loss_cls=2.3620412349700928,
                            loss_margin=6.810033798217773), 95.58535919035785),
    'at_eval': (2.0, dict(type='MultiModalPGD', eps=0.3, steps=2, bn='eval'),
                dict(loss_cls=2.326975107192993,
                     loss_margin=6.391178131103516), 118.57449449942214),
    'mmat': (0.0, dict(type='MultiModalPGD', eps=0.1, steps=5),
             dict(loss_cls=2.320502281188965), 118.57442399149295),
    'mix': (2.0, dict(type='Mixup', alpha=1.0),
            dict(loss_cls=2.317410707473755,
                 loss_margin=6.121906757354736), 118.0626685268362),
    'mixup': (0.0, dict(type='Mixup', alpha=0.4),
              dict(loss_cls=2.3186402320861816), 118.1264502053964),
}


def build(rho=2.0, train_perturbation=None):
    cfg = Config.fromfile(MODEL_CFG).model
    cfg.loss = dict(type='CRMTMarginLoss', rho=rho)
    cfg.train_perturbation = train_perturbation
    torch.manual_seed(0)
    return MODELS.build(cfg).train()


def fixed_batch():
    g = torch.Generator().manual_seed(1)
    x = dict(visual=torch.rand(6, 1, 3, 3, 32, 32, generator=g) * 4 - 2,
             audio=torch.randn(6, 1, 1, 64, 64, generator=g))
    return x, torch.tensor([0, 1, 2, 3, 1, 7])


def running_sum(model):
    return sum(float(v.float().sum()) for k, v in model.state_dict().items()
               if 'running' in k)


@pytest.mark.parametrize('name', list(CASES))
def test_losses_equal_the_pre_change_variants(name):
    rho, perturbation, expected, stats = CASES[name]
    model = build(rho, perturbation)
    x, y = fixed_batch()
    torch.manual_seed(2)
    losses = model._phase1_loss(x, y)
    got = {k: float(v.detach()) for k, v in losses.items()
           if k.startswith('loss')}
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert running_sum(model) == pytest.approx(stats, rel=1e-6)


def test_old_variant_keys_fail_with_the_new_spelling():
    with pytest.raises(ValueError) as info:
        MODELS.build(dict(type='CRMTMarginLoss', variant='AT', rho=2.0,
                          at_eps=0.2, at_steps=4))
    message = str(info.value)
    assert "train_perturbation=dict(type='MultiModalPGD', eps=0.2, " \
        "steps=4, bn='frozen_stats', clamp=False)" in message
    assert "loss=dict(type='CRMTMarginLoss', rho=2.0)" in message
    with pytest.raises(ValueError, match=r"dict\(type='Mixup', alpha=0.5\)"):
        CRMTMarginLoss(variant='Mix', mix_alpha=0.5)
    # variant='JT' silently ignored AT options before; now it is an error.
    with pytest.raises(ValueError, match=r"\['variant', 'at_eps'\] moved.*"
                       'no train_perturbation'):
        CRMTMarginLoss(variant='JT', at_eps=0.3)
    cfg = Config.fromfile(MODEL_CFG).model
    cfg.loss.update(variant='AT', at_eps=0.1)
    with pytest.raises(ValueError, match='MultiModalPGD'):
        MODELS.build(cfg)


@pytest.mark.parametrize('cfg, error, match', [
    (dict(eps=0.1), ValueError, 'must be a dict with a type'),
    (dict(type='PGD', eps=0.1), ValueError,
     r"'PGD' is unknown; registered types: \['GaussianNoise', "
     r"'Mixup', 'MultiModalPGD'\]"),
    (dict(type='Mixup', alpha=1.0, eps=0.1), TypeError,
     r"type='Mixup'.*unknown config key\(s\) \['eps'\]"),
    (dict(type='MultiModalPGD', eps=-1), ValueError, 'eps must be'),
    (dict(type='MultiModalPGD', eps=0.1, steps=0), ValueError, 'steps'),
    (dict(type='MultiModalPGD', eps=0.1, bn='fixed'), ValueError, 'bn must'),
    (dict(type='Mixup', alpha=0), ValueError, 'alpha must be'),
    (dict(type='GaussianNoise', modality='depth', sigma=0.1), ValueError,
     r"modality 'depth' is not one of the model's modalities"),
    (dict(type='GaussianNoise', modality='audio', sigma=dict(audio=0.1)),
     ValueError, 'needs modality=None'),
    (dict(type='GaussianNoise', sigma=dict(audio=0.1)), ValueError,
     r"give a sigma for each"),
    (dict(type='GaussianNoise', sigma=-0.1), ValueError, 'sigma must be'),
])
def test_bad_entries_are_rejected_with_a_message(cfg, error, match):
    with pytest.raises(error, match=match):
        build_train_perturbation(cfg, ('visual', 'audio'))


def test_registry_names():
    assert sorted(TRAIN_PERTURBATIONS.module_dict) == [
        'GaussianNoise', 'Mixup', 'MultiModalPGD']


def test_noise_only_in_training_mode_on_the_chosen_modality():
    model = build(train_perturbation=dict(type='GaussianNoise',
                                          modality='audio', sigma=0.25))
    x, y = fixed_batch()
    noise = model.train_perturbation
    torch.manual_seed(3)
    first = noise(model, x, y)
    torch.manual_seed(3)
    again = noise(model, x, y)
    assert first.labels_b is None and first.lam == 1.0
    assert first.inputs['visual'] is x['visual']  # untouched
    assert torch.equal(first.inputs['audio'], again.inputs['audio'])
    delta = first.inputs['audio'] - x['audio']
    assert abs(float(delta.std()) - 0.25) < 0.01
    assert abs(float(delta.mean())) < 0.01
    assert not torch.equal(noise(model, x, y).inputs['audio'],
                           first.inputs['audio'])  # fresh draw per step
    # The loss sees the noise in training mode only.
    torch.manual_seed(3)
    noisy = model._phase1_loss(x, y)['loss_cls']
    clean = build()._phase1_loss(x, y)['loss_cls']
    assert not torch.allclose(noisy, clean)
    model.eval()
    with torch.no_grad():
        in_eval = model._phase1_loss(x, y)['loss_cls']
        model.train_perturbation = None
        assert torch.equal(in_eval, model._phase1_loss(x, y)['loss_cls'])


def test_noise_on_all_modalities_with_per_modality_sigma():
    model = build(train_perturbation=dict(
        type='GaussianNoise', sigma=dict(visual=0.0, audio=0.5)))
    x, y = fixed_batch()
    out = model.train_perturbation(model, x, y).inputs
    assert out['visual'] is x['visual']
    assert abs(float((out['audio'] - x['audio']).std()) - 0.5) < 0.02
    both = build_train_perturbation(dict(type='GaussianNoise', sigma=0.1),
                                    ('visual', 'audio'))
    out = both(model, x, y).inputs
    for m in x:
        assert abs(float((out[m] - x[m]).std()) - 0.1) < 0.01


@pytest.mark.parametrize('policy,moved', [('frozen_stats', False),
                                          ('train', True), ('eval', False)])
def test_batchnorm_policy(policy, moved):
    model = build()
    x, _ = fixed_batch()
    before = running_sum(model)
    with batchnorm_policy(model, policy):
        model.fused_logits(x)
        assert model.encoders.training == (policy != 'eval')
    assert (running_sum(model) != before) == moved
    assert model.training and model.encoders.training


def test_pgd_writes_no_parameter_gradient():
    model = build(train_perturbation=PGD)
    x, y = fixed_batch()
    model.train_perturbation(model, x, y)
    assert all(p.grad is None for p in model.parameters())
