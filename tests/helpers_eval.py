"""Shared helpers of the robust-evaluation tests: runners, checkpoints,
records and a tiny stock mmaction2 multi-input recognizer."""
import glob
import os.path as osp

import torch
from mmaction.registry import DATASETS
from mmaction.structures import ActionDataSample
from mmengine.runner import Runner

from crmt_mm.certification import estimate_tau_on_loader
from helpers import tiny_config

#: One of every perturbation family, on the AV-Digits modalities.
ATTACKS = [
    dict(type='UniModalPGD', modality='audio', eps=[0.5, 1.0]),
    dict(type='UniModalFGM', modality='audio', eps=[0.5, 1.0]),
    dict(type='MultiModalPGD', eps=100.0),
    dict(type='MissingModality', modality='visual'),
    dict(type='MissingModality', modality='audio', mode='feature'),
    dict(type='GaussianNoise', modality='audio', sigma=0.1),
]
RADII = [0, 0.1, 0.5]


def save_tau_checkpoint(root: str, work: str, config='crmt_avdigits.py',
                        name='crmt_tau.pth') -> str:
    """The seeded initial model of ``config`` with tau estimated on the
    training data (as the phase switch would), saved to ``work/name``."""
    runner = Runner.from_cfg(tiny_config(config, root, work))
    model = runner.model.eval()
    model.tau.copy_(estimate_tau_on_loader(model,
                                           runner.train_dataloader)['tau'])
    runner.save_checkpoint(work, name, save_optimizer=False,
                           save_param_scheduler=False)
    return osp.join(work, name)


def robust_runner(root, work_dir, perturbations, certify=None,
                  config='crmt_avdigits.py', indices=7, batch_size=3,
                  evaluator=None, **loop):
    """A Runner whose test loop is a RobustTestLoop on ``indices`` clips."""
    cfg = tiny_config(config, root, str(work_dir))
    cfg.test_dataloader.dataset.indices = indices
    if indices == 0:
        # mmengine can neither serialise nor round up an empty data list.
        cfg.test_dataloader.dataset.serialize_data = False
        cfg.test_dataloader.sampler.round_up = False
    cfg.test_dataloader.batch_size = batch_size
    cfg.test_cfg = dict(dict(type='RobustTestLoop', log_interval=1),
                        perturbations=perturbations, certify=certify, **loop)
    cfg.test_evaluator = evaluator or [dict(type='AccMetric'),
                                       dict(type='RobustAccMetric',
                                            worst_case='auto')]
    return Runner.from_cfg(cfg)


def log_text(runner) -> str:
    """Everything the runner logged to its files so far."""
    return ''.join(open(p).read()
                   for p in glob.glob(osp.join(runner.log_dir, '*.log')))


def records(labels, **preds):
    """Robust records with these labels and predictions per name."""
    return [dict(label=t, preds={k: v[i] for k, v in preds.items()})
            for i, t in enumerate(labels)]


def desc(name, kind, budget=None, label='audio', unit='normalized'):
    """A perturbation description as ``Perturbation.describe`` gives."""
    return dict(name=name, type='T', kind=kind, modalities=['audio'],
                label=label, budget=budget, unit=unit,
                curve=f'{kind}_{label}' if budget is not None else None,
                group='audio', settings=dict(eps=budget, norm='L2'))


# ---- a tiny stock MMRecognizer3D (RGBPoseConv3D) ----------------------------

#: Clip shapes [C, T, H, W]: RGB at 1/4 of the pose frame rate and 4x its
#: resolution, as RGBPoseConv3D's lateral connections require.
RGB_SHAPE, POSE_SHAPE = (3, 2, 32, 32), (3, 8, 8, 8)
NUM_CLASSES = 3


def tiny_rgbpose_model(model_type='RobustMMRecognizer3D') -> dict:
    """mmaction2's RGBPoseConv3D recognizer config with tiny widths."""
    backbone = dict(
        type='RGBPoseConv3D', speed_ratio=4, channel_ratio=4,
        rgb_pathway=dict(
            num_stages=4, lateral=True, lateral_infl=1,
            lateral_activate=[0, 0, 1, 1], fusion_kernel=7, base_channels=8,
            conv1_kernel=(1, 7, 7), inflate=(0, 0, 1, 1), with_pool2=False,
            stage_blocks=(1, 1, 1, 1)),
        pose_pathway=dict(
            num_stages=3, stage_blocks=(1, 1, 1), lateral=True,
            lateral_inv=True, lateral_infl=16, lateral_activate=(0, 1, 1),
            fusion_kernel=7, in_channels=3, base_channels=4,
            out_indices=(2, ), conv1_kernel=(1, 7, 7), conv1_stride_s=1,
            conv1_stride_t=1, pool1_stride_s=1, pool1_stride_t=1,
            inflate=(0, 1, 1), spatial_strides=(2, 2, 2),
            temporal_strides=(1, 1, 1), dilations=(1, 1, 1),
            with_pool2=False))
    return dict(
        type=model_type, backbone=backbone,
        cls_head=dict(type='RGBPoseHead', num_classes=NUM_CLASSES,
                      in_channels=[256, 64], average_clips='prob'),
        data_preprocessor=dict(
            type='MultiModalDataPreprocessor',
            preprocessors=dict(
                imgs=dict(type='ActionDataPreprocessor',
                          mean=[123.675, 116.28, 103.53],
                          std=[58.395, 57.12, 57.375],
                          format_shape='NCTHW'),
                heatmap_imgs=dict(type='ActionDataPreprocessor'))))


@DATASETS.register_module(force=True)
class TinyRGBPoseClips(torch.utils.data.Dataset):
    """Seeded random RGB clips (0..255) and pose heatmaps (0..1), packed as
    ``PackActionInputs`` would: ``inputs={imgs, heatmap_imgs}`` [1, C, T,
    H, W] and an ``ActionDataSample`` with ``gt_label``."""

    def __init__(self, num=4, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for index in range(num):
            sample = ActionDataSample().set_gt_label(index % NUM_CLASSES)
            self.items.append(dict(
                inputs=dict(
                    imgs=torch.rand((1,) + RGB_SHAPE,
                                    generator=generator) * 255,
                    heatmap_imgs=torch.rand((1,) + POSE_SHAPE,
                                            generator=generator)),
                data_samples=sample))
        self.metainfo = dict(classes=list(range(NUM_CLASSES)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def rgbpose_runner(work_dir, perturbations, model_type='RobustMMRecognizer3D',
                   **loop) -> Runner:
    """A Runner testing the tiny RGBPose recognizer with a RobustTestLoop."""
    return Runner(
        model=tiny_rgbpose_model(model_type), work_dir=str(work_dir),
        test_dataloader=dict(
            batch_size=2, num_workers=0,
            dataset=dict(type='TinyRGBPoseClips', num=4),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        test_cfg=dict(type='RobustTestLoop', perturbations=perturbations,
                      **loop),
        test_evaluator=[dict(type='AccMetric'),
                        dict(type='RobustAccMetric')],
        default_scope='mmaction', log_level='WARNING',
        randomness=dict(seed=0))
