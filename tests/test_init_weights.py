"""init_weights() reaches every encoder: backbone ``pretrained``/``init_cfg``
and branch initialisation from stock mmaction2 checkpoints, with errors
naming the file and the branch. Every checkpoint is written by the test."""
import copy

import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import save_checkpoint

import crmt_mm  # noqa: F401
from helpers import config_path
from helpers_identity import shrink_inputs

init_default_scope('mmaction')


def resnet(depth=18, in_channels=3, **kwargs):
    return dict(type='ResNet', depth=depth, in_channels=in_channels,
                norm_eval=False, **kwargs)


def crmt(visual_backbone=None, audio_backbone=None, visual_init=None,
         audio_init=None):
    def encoder(key, backbone, temporal, shape, init_cfg):
        cfg = dict(input_key=key, feat_dim=backbone.get('feat', 512),
                   temporal=temporal, input_shape=shape, backbone=backbone)
        if init_cfg is not None:
            cfg['init_cfg'] = init_cfg
        return cfg
    return dict(
        type='CRMTRecognizer',
        encoders=dict(
            visual=encoder('imgs', visual_backbone or resnet(), 'fold',
                           (3, 1, 32, 32), visual_init),
            audio=encoder('audios', audio_backbone or resnet(in_channels=1),
                          'none', (1, 32, 32), audio_init)),
        head=dict(type='CRMTHead', num_classes=5))


def stock_recognizer(kind, backbone):
    """A stock single-modality mmaction2 recognizer (random weights)."""
    head = dict(type='TSNHead', num_classes=7, in_channels=512) \
        if kind == 'Recognizer2D' else dict(type='TSNAudioHead',
                                            num_classes=7, in_channels=512)
    torch.manual_seed(11)
    model = MODELS.build(dict(type=kind, backbone=backbone, cls_head=head))
    with torch.no_grad():  # not what a fresh CRMT backbone would hold
        for p in model.parameters():
            p.add_(0.5)
    return model


def same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k])
                                        for k in sa)


def test_missing_backbone_pretrained_file_names_file_and_branch():
    """The issue's reproduction: it used to return silently."""
    model = MODELS.build(crmt(resnet(pretrained='/nonexistent.pth')))
    with pytest.raises(FileNotFoundError,
                       match=r"encoders\.visual.*'/nonexistent\.pth'"):
        model.init_weights()


def test_backbone_pretrained_and_init_cfg_are_applied(tmp_path):
    source = MODELS.build(resnet(in_channels=1))
    path = str(tmp_path / 'backbone.pth')
    torch.save(source.state_dict(), path)
    for backbone in (resnet(in_channels=1, init_cfg=dict(
            type='Pretrained', checkpoint=path)),
            resnet(in_channels=1, pretrained=path,
                   torchvision_pretrain=False)):
        model = MODELS.build(crmt(audio_backbone=backbone))
        assert not same_tensors(model.encoders.audio.backbone, source)
        model.init_weights()
        assert same_tensors(model.encoders.audio.backbone, source)


@pytest.mark.parametrize('kind, branch', [('Recognizer2D', 'visual'),
                                          ('RecognizerAudio', 'audio')])
def test_branch_from_a_stock_mmaction2_checkpoint(kind, branch, tmp_path):
    channels = 3 if branch == 'visual' else 1
    stock = stock_recognizer(kind, resnet(in_channels=channels))
    path = str(tmp_path / f'{kind}.pth')
    save_checkpoint(dict(state_dict=stock.state_dict()), path)
    init = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    model = MODELS.build(crmt(**{f'{branch}_init': init}))
    other = 'audio' if branch == 'visual' else 'visual'
    before = copy.deepcopy(model.encoders[other].backbone)
    log = tmp_path / 'init.log'
    MMLogger.get_instance(f'init_{kind}', log_file=str(log),
                          log_level='INFO')
    model.init_weights()
    text = log.read_text()
    assert same_tensors(model.encoders[branch].backbone, stock.backbone)
    assert not same_tensors(model.encoders[other].backbone, before)  # init
    count = len(stock.backbone.state_dict())
    assert f'encoders.{branch}: loaded {count} of {count} backbone tensors ' \
        f'from {path!r}' in text
    assert 'keys outside the prefix ignored); missing: none' in text


def test_mismatched_or_missing_branch_checkpoint_names_file_and_branch(
        tmp_path):
    stock = stock_recognizer('Recognizer2D', resnet(depth=34))
    path = str(tmp_path / 'r34.pth')
    save_checkpoint(dict(state_dict=stock.state_dict()), path)
    init = dict(type='Pretrained', checkpoint=path)  # prefix 'backbone.'
    model = MODELS.build(crmt(visual_init=init))
    with pytest.raises(ValueError, match=r"encoders\.visual: checkpoint "
                       f"'{path}' does not fit the backbone ResNet.*"
                       r'unexpected \d+ \[.layer1\.2'):
        model.init_weights()
    lax = MODELS.build(crmt(visual_init=dict(init, strict=False)))
    lax.init_weights()  # ResNet-34's first blocks fit ResNet-18's
    assert torch.equal(lax.encoders.visual.backbone.conv1.conv.weight,
                       stock.backbone.conv1.conv.weight)
    gone = MODELS.build(crmt(audio_init=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'gone.pth'))))
    with pytest.raises(FileNotFoundError,
                       match=r"encoders\.audio: init_cfg checkpoint .*gone"):
        gone.init_weights()
    with pytest.raises(ValueError, match=r'encoders\.audio.*accepts'):
        MODELS.build(crmt(audio_init=dict(type='Pretrained', path='x')))


def torchvision_resnet_file(depth: int, path: str) -> dict:
    """Write random weights under torchvision's ResNet key names (conv1,
    bn1, layerX.Y.convN/bnN, layerX.Y.downsample.0/1) like the ImageNet
    file of ``torchvision://resnetD``; return them."""
    from mmcv.cnn import ConvModule
    reference = MODELS.build(resnet(depth, pretrained=None))
    state, g = {}, torch.Generator().manual_seed(depth)
    for name, module in reference.named_modules():
        if not isinstance(module, ConvModule):
            continue
        conv, bn = (f'{name}.0', f'{name}.1') if 'downsample' in name else (
            name, name.replace('conv', 'bn'))
        state[f'{conv}.weight'] = torch.randn(module.conv.weight.shape,
                                              generator=g)
        channels = module.bn.num_features
        state[f'{bn}.weight'] = torch.rand(channels, generator=g)
        state[f'{bn}.bias'] = torch.randn(channels, generator=g)
        state[f'{bn}.running_mean'] = torch.randn(channels, generator=g)
        state[f'{bn}.running_var'] = torch.rand(channels, generator=g) + 0.5
    torch.save(state, path)
    return state


def test_example_config_is_imagenet_pretrained(tmp_path):
    """configs/examples/crmt_from_mmaction_bases.py keeps the stock TSN
    recipe's ImageNet ResNet-50 (a download); with that file present, as
    here a test-written one in torchvision's format, init_weights loads it
    into the visual branch."""
    cfg = Config.fromfile(config_path('examples/crmt_from_mmaction_bases.py'))
    backbone = cfg.model.encoders.visual.backbone
    assert backbone.depth == 50
    assert backbone.pretrained.startswith('https://download.pytorch.org/')
    path = str(tmp_path / 'resnet50-imagenet.pth')
    state = torchvision_resnet_file(50, path)
    backbone.pretrained = path
    shrink_inputs(cfg.model)
    model = MODELS.build(cfg.model)
    model.init_weights()
    loaded = model.encoders.visual.backbone
    assert torch.equal(loaded.conv1.conv.weight, state['conv1.weight'])
    assert torch.equal(loaded.layer4[2].conv3.bn.running_var,
                       state['layer4.2.bn3.running_var'])
    assert torch.equal(loaded.layer1[0].downsample.conv.weight,
                       state['layer1.0.downsample.0.weight'])
