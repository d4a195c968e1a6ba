# Example (a): a CRMT model assembled from mmaction2's own shipped configs.
# Runtime and schedule are mmaction2's (`mmaction::`), the visual encoder
# reuses the backbone of mmaction2's TSN-R50 recipe (ImageNet-pretrained
# ResNet-50, frames folded into the batch); crmt_mm adds the lines below.
# Data: Kinetics-Sounds from tools/data/prepare_ks_vggsound.py. The
# hyper-parameters are mmaction2's, not the paper's (see configs/crmt_ks.py).
# ImageNet weights: the stock backbone's pretrained URL
# (download.pytorch.org/models/resnet50-11ad3fa6.pth) is loaded by
# init_weights() when training starts; the first run downloads it into
# $TORCH_HOME/hub/checkpoints (~/.cache/torch/...). Offline, copy the file
# there or set model.encoders.visual.backbone.pretrained=<local .pth>; a
# missing file stops the run with an error naming it and the branch.
# To start a branch from a stock mmaction2 checkpoint instead (e.g. a TSN
# RGB model or a RecognizerAudio model with the same backbone config), add
# init_cfg=dict(type='Pretrained', checkpoint=<file>, prefix='backbone.')
# to that encoder (see ModalityEncoder).
_base_ = [
    'mmaction::_base_/default_runtime.py',
    'mmaction::_base_/models/tsn_r50.py',
    'mmaction::_base_/schedules/sgd_100e.py',
    '../_base_/datasets/kinetics_sounds.py',
]
custom_imports = dict(imports=['crmt_mm'], allow_failed_imports=False)
model = dict(
    _delete_=True,
    type='CRMTRecognizer',
    encoders=dict(
        visual=dict(input_key='imgs', feat_dim=2048, temporal='fold',
                    backbone={{_base_.model.backbone}}),
        audio=dict(input_key='audios', feat_dim=512,
                   backbone=dict(type='ResNet', depth=18, in_channels=1))),
    head=dict(type='CRMTHead', num_classes={{_base_.num_classes}}),
    loss=dict(type='CRMTMarginLoss', rho=2.0),
    data_preprocessor=dict(
        type='MultiModalDataPreprocessor',
        preprocessors=dict(
            imgs=dict(type='ActionDataPreprocessor',
                      mean={{_base_.model.data_preprocessor.mean}},
                      std={{_base_.model.data_preprocessor.std}},
                      format_shape='NCTHW'),
            audios=dict(type='ActionDataPreprocessor'))))
test_evaluator = dict(type='AccMetric')
# CRMT step 2 (re-weighting a^(m)) after the stock 100 epochs, whose
# MultiStepLR already ends at epoch 100.
train_cfg = dict(max_epochs=145)
custom_hooks = [dict(type='CRMTPhaseSwitchHook', switch_epoch=100)]
optim_wrapper = dict(paramwise_cfg=dict(
    custom_keys={'head.integration': dict(crmt_group='integration')}))
find_unused_parameters = True  # step 2 freezes parameters (DDP)
default_hooks = dict(checkpoint=dict(save_best='acc/fused_top1'))
