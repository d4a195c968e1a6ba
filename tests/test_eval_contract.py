"""Any recognizer: the minimal model contract, mmaction2's stock
MMRecognizer3D (RGBPoseConv3D) through its adapter, and a JT model, under
uni-modal attacks in RobustTestLoop."""
import numpy as np
import pytest
import torch
from mmaction.registry import MODELS

from crmt_mm.evaluation import load_report
from helpers_eval import (POSE_SHAPE, RGB_SHAPE, rgbpose_runner,
                          robust_runner, tiny_rgbpose_model)

RGBPOSE_ATTACKS = [
    dict(type='UniModalPGD', modality='imgs', eps=[1.0, 4.0], steps=2),
    dict(type='UniModalFGM', modality='heatmap_imgs', eps=1.0),
    dict(type='MissingModality', modality='heatmap_imgs'),
    dict(type='MissingModality', modality='imgs', mode='feature'),
]


def test_rgbpose_adapter_in_robust_test_loop(tmp_path):
    runner = rgbpose_runner(tmp_path, RGBPOSE_ATTACKS)
    model = runner.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = runner.test()
    robust = {k[len('robust/'):]: v for k, v in metrics.items()
              if k.startswith('robust/')}
    assert set(robust) >= {'clean', 'pgd_imgs@1.0', 'pgd_imgs@4.0',
                           'fgm_heatmap_imgs@1.0', 'missing_heatmap_imgs',
                           'missing_imgs_feat', 'auc_pgd_imgs'}
    # The clean fused prediction is AccMetric's 1:1 RGBPose fusion.
    assert robust['clean'] == metrics['acc/RGBPose_1:1_top1']
    for key in ('pgd_imgs@1.0', 'pgd_imgs@4.0', 'fgm_heatmap_imgs@1.0'):
        assert 0 <= robust[key] <= robust['clean']
    assert all(torch.equal(before[k], v)
               for k, v in model.state_dict().items())
    report = load_report(str(tmp_path / 'robustness.json'))
    assert report['run']['model'] == 'RobustMMRecognizer3D'
    assert report['run']['head'] == 'RGBPoseHead'
    assert report['clamp_ranges'] == dict(imgs=[0.0, 255.0],
                                          heatmap_imgs=None)


def test_rgbpose_adapter_contract():
    model = MODELS.build(tiny_rgbpose_model()).eval()
    assert model.modalities == ('imgs', 'heatmap_imgs')
    x = dict(imgs=torch.randn((2, 1) + RGB_SHAPE),
             heatmap_imgs=torch.rand((2, 1) + POSE_SHAPE))
    with torch.no_grad():
        logits = model.fused_logits(x)
        # 'prob' fusion: log of the mean stream probability (sums to 1).
        assert torch.allclose(logits.exp().sum(1), torch.ones(2))
        dropped = model.fused_logits(x, drop=('imgs',))
        zeroed = model.fused_logits(dict(x, imgs=torch.zeros_like(x['imgs'])))
        assert torch.equal(dropped, zeroed)  # drop = input zeroing
    spaces = model.input_spaces()
    assert spaces['heatmap_imgs'] is None and spaces['imgs'].bounded
    with pytest.raises(ValueError, match='fusion must be one of'):
        MODELS.build(dict(tiny_rgbpose_model(), fusion='max'))


def test_stock_recognizer_and_certification_refused_with_reasons(tmp_path):
    with pytest.raises(TypeError, match='batch_to_modalities.*fused_logits'
                       '.*RobustMMRecognizer3D'):
        rgbpose_runner(tmp_path, RGBPOSE_ATTACKS[:1],
                       model_type='MMRecognizer3D').test()
    with pytest.raises(TypeError, match='certification.*modality_logits'):
        rgbpose_runner(tmp_path, RGBPOSE_ATTACKS[:1],
                       certify=dict(tau_source='estimate',
                                    tau_data='self')).test()


def test_jt_model_under_unimodal_attacks(avdigits_tiny, tmp_path):
    """Attack-only evaluation of a JT (ConcatHead) model: no tau needed."""
    runner = robust_runner(
        avdigits_tiny, tmp_path,
        [dict(type='UniModalPGD', modality='audio', eps=[0.5, 1.0]),
         dict(type='UniModalFGM', modality='visual', eps=1.0)],
        config='jt_avdigits.py', indices=4, batch_size=2)
    metrics = runner.test()
    assert not bool(runner.model.tau.any())
    for key in ('pgd_audio@0.5', 'pgd_audio@1.0', 'fgm_visual@1.0'):
        assert 0 <= metrics[f'robust/{key}'] <= metrics['robust/clean']
    report = load_report(str(tmp_path / 'robustness.json'))
    assert report['run']['head'] == 'ConcatHead'
    assert report['certification']['status'] == 'off'
    assert np.isclose(report['metrics']['robust/clean'],
                      metrics['acc/fused_top1'])
