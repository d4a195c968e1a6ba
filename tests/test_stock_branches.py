"""Stock mmaction2 recognizer configs (the ones shipped in the installed
package) as CRMT branches: build, loss, predict and one optimiser step on
tiny inputs, the preprocessor entries they bring, and their errors.

Sizes are shrunk only in the inputs (32x32 frames, 2 segments, a 64x32
spectrogram) and in TSM's ``num_segments`` (8 -> 2, to match 2 segments);
the backbones keep their stock depth.
"""
import copy

import pytest
import torch
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from crmt_mm.models.recognizers import StockBranch, resolve_recognizer

init_default_scope('mmaction')

TSN = ('mmaction::recognition/tsn/'
       'tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py')
TSM = ('mmaction::recognition/tsm/'
       'tsm_imagenet-pretrained-r50_8xb16-1x1x16-50e_kinetics400-rgb.py')
SLOWONLY = ('mmaction::recognition/slowonly/slowonly_imagenet-pretrained-'
            'r50_8xb16-4x16x1-steplr-150e_kinetics400-rgb.py')
AUDIO = ('mmaction::recognition_audio/resnet/'
         'tsn_r18_8xb320-64x1x1-100e_kinetics400-audio-feature.py')
#: config -> (per-sample input shape, stock format_shape, feat_dim)
STOCK = {
    'tsn': (TSN, (2, 3, 32, 32), 'NCHW', 2048),
    'tsm': (TSM, (2, 3, 32, 32), 'NCHW', 2048),
    'slowonly': (SLOWONLY, (1, 3, 4, 32, 32), 'NCTHW', 2048),
    'audio': (AUDIO, (1, 1, 64, 32), 'NCHW', 512),
}
NUM_CLASSES = 3


def stock_cfg(name):
    cfg = resolve_recognizer(STOCK[name][0])
    if name == 'tsm':
        cfg['backbone']['num_segments'] = 2
    return cfg


def partner(name):
    """A tiny second modality beside the stock branch under test."""
    return dict(input_key='extras', feat_dim=8,
                backbone=dict(type='ConvEncoder', in_channels=1,
                              input_size=(8, 8), channels=(4, ),
                              feat_dim=8))


def build_model(name, **extra):
    encoders = dict(stock=dict(input_key='imgs', recognizer=stock_cfg(name)),
                    other=partner(name))
    pre = dict(type='MultiModalDataPreprocessor', preprocessors=dict(
        extras=dict(type='ActionDataPreprocessor')))
    return MODELS.build(dict(
        type='CRMTRecognizer', encoders=encoders,
        head=dict(type='CRMTHead', num_classes=NUM_CLASSES),
        data_preprocessor=extra.pop('data_preprocessor', pre), **extra))


def batch(name, size=2):
    shape = STOCK[name][1]
    samples = []
    for label in range(size):
        sample = ActionDataSample()
        sample.set_gt_label(torch.tensor([label % NUM_CLASSES]))
        samples.append(sample)
    return dict(inputs=dict(
        imgs=[torch.rand(shape) * 255 for _ in range(size)],
        extras=[torch.rand(1, 1, 8, 8) for _ in range(size)]),
        data_samples=samples)


@pytest.mark.parametrize('name', list(STOCK))
def test_stock_branch_trains_and_predicts(name):
    torch.manual_seed(0)
    model = build_model(name)
    encoder = model.encoders['stock']
    assert isinstance(encoder.backbone, StockBranch)
    assert encoder.feat_dim == STOCK[name][3]
    assert encoder.temporal == 'clips'
    # The stock head is gone; its backbone is ours.
    assert not any('cls_head' in k for k in model.state_dict())
    stock = stock_cfg(name)
    pre = model.data_preprocessor.preprocessors['imgs']
    assert pre.format_shape == STOCK[name][2]
    if stock.get('data_preprocessor', {}).get('mean') is not None:
        mean = torch.tensor(stock['data_preprocessor']['mean'])
        assert torch.allclose(pre.mean.flatten(), mean)
    else:  # mmaction2's default: stacking only
        assert not pre._enable_normalize

    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    before = {k: v.clone() for k, v in model.named_parameters()}
    losses = model.train_step(batch(name), optim)
    assert torch.isfinite(losses['loss'])
    moved = [k for k, v in model.named_parameters()
             if not torch.equal(v, before[k])]
    assert any(k.startswith('encoders.stock.backbone.backbone.')
               for k in moved)

    model.eval()
    out = model.test_step(batch(name))
    scores = out[0].pred_score
    assert set(scores) == {'fused', 'stock', 'other'}
    assert scores['fused'].shape == (NUM_CLASSES, )


def test_tsn_features_are_the_segment_consensus():
    """The TSN branch equals mmaction2's TSN: the backbone per segment,
    average pooling and the mean over segments (AvgConsensus)."""
    torch.manual_seed(0)
    branch = StockBranch(stock_cfg('tsn')).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        per_segment = branch.backbone(x.flatten(0, 1)).mean((2, 3))
        expected = per_segment.view(2, 3, -1).mean(1)
        assert torch.allclose(branch(x), expected, atol=1e-5)


def test_string_reference_and_user_entry():
    """``recognizer='mmaction::...'`` resolves like ``_base_``; a user's
    preprocessor entry is kept when its format agrees."""
    cfg = stock_cfg('audio')
    assert cfg['type'] == 'RecognizerAudio'
    pre = dict(type='MultiModalDataPreprocessor', preprocessors=dict(
        imgs=dict(type='ActionDataPreprocessor', mean=[1.0], std=[2.0]),
        extras=dict(type='ActionDataPreprocessor')))
    model = MODELS.build(dict(
        type='CRMTRecognizer',
        encoders=dict(stock=dict(input_key='imgs', recognizer=AUDIO),
                      other=partner('audio')),
        head=dict(type='CRMTHead', num_classes=2), data_preprocessor=pre))
    assert float(model.data_preprocessor.preprocessors['imgs'].std) == 2.0


def test_errors_name_the_fix():
    gcn = dict(type='RecognizerGCN', backbone=dict(type='STGCN'),
               cls_head=dict(type='GCNHead', num_classes=2, in_channels=4))
    with pytest.raises(ValueError, match='Recognizer2D.*Recognizer3D.*'
                       'RecognizerAudio'):
        StockBranch(gcn)
    with pytest.raises(ValueError, match='either backbone or recognizer'):
        MODELS.build(dict(
            type='CRMTRecognizer', head=dict(type='CRMTHead', num_classes=2),
            encoders=dict(a=dict(input_key='imgs', recognizer=AUDIO,
                                 backbone=dict(type='ResNet', depth=18)),
                          b=partner('audio'))))
    wrong = dict(type='MultiModalDataPreprocessor', preprocessors=dict(
        imgs=dict(type='ActionDataPreprocessor', format_shape='NCTHW'),
        extras=dict(type='ActionDataPreprocessor')))
    with pytest.raises(ValueError, match="format_shape is 'NCTHW'"):
        build_model('tsn', data_preprocessor=wrong)
    blending = stock_cfg('tsn')
    blending['data_preprocessor']['blending'] = dict(type='MixupBlending',
                                                     num_classes=2)
    with pytest.raises(ValueError, match='blending'):
        MODELS.build(dict(
            type='CRMTRecognizer', head=dict(type='CRMTHead', num_classes=2),
            encoders=dict(a=dict(input_key='imgs', recognizer=blending),
                          b=partner('tsn'))))
    with pytest.raises(ValueError, match='in_channels=512'):
        MODELS.build(dict(
            type='CRMTRecognizer', head=dict(type='CRMTHead', num_classes=2),
            encoders=dict(a=dict(input_key='imgs', recognizer=AUDIO,
                                 feat_dim=7), b=partner('audio'))))
    tsm = StockBranch(stock_cfg('tsm'))
    with pytest.raises(ValueError, match='num_segments=2'):
        tsm(torch.zeros(1, 3, 3, 32, 32))
    trn = copy.deepcopy(stock_cfg('tsn'))
    trn['cls_head']['type'] = 'TRNHead'
    with pytest.raises(ValueError, match='TRNHead'):
        StockBranch(trn)


def test_example_config_from_two_stock_recognizers():
    """configs/examples/crmt_from_stock_recognizers.py builds from the two
    referenced stock configs and runs one training step on tiny inputs."""
    from mmengine.config import Config

    from helpers import config_path
    cfg = Config.fromfile(config_path(
        'examples/crmt_from_stock_recognizers.py'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    pre = model.data_preprocessor.preprocessors
    assert pre['imgs'].format_shape == 'NCHW'
    assert torch.allclose(pre['imgs'].mean.flatten(),
                          torch.tensor([123.675, 116.28, 103.53]))
    assert model.encoders['visual'].feat_dim == 2048
    assert model.encoders['audio'].feat_dim == 512
    samples = []
    for label in (0, 1):
        sample = ActionDataSample()
        sample.set_gt_label(torch.tensor([label]))
        samples.append(sample)
    data = dict(inputs=dict(
        imgs=[torch.rand(3, 3, 32, 32) * 255 for _ in samples],
        audios=[torch.randn(1, 1, 64, 32) for _ in samples]),
        data_samples=samples)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    losses = model.train_step(data, optim)
    assert torch.isfinite(losses['loss'])
