# UCF101, RGB + TV-L1 optical flow, 101 classes (docs/method.md §11). Prepare with
# `python tools/data/prepare_ucf101.py UCF-101 ucfTrainTestlist data/ucf101`
# (docs/datasets.md). The reference has no UCF101 loader: 3 frames per clip
# as for Kinetics-Sounds, and the flow pair of each sampled frame, are
# assumptions. RGB and flow share one lazy crop/resize/flip (FuseFlow).
dataset_type = 'RawframeDataset'
data_root = 'data/ucf101'
num_classes = 101
split = 1  # official split 1, 2 or 3

train_pipeline = [
    dict(type='UniformSample', clip_len=3, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='RawFlowDecode'),
    dict(type='RandomResizedCrop', lazy=True),
    dict(type='Resize', scale=(224, 224), keep_ratio=False, lazy=True),
    dict(type='Flip', flip_ratio=0.5, lazy=True),
    dict(type='FuseFlow'),
    dict(type='Fuse'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs', collect_keys=('imgs', 'flows')),
]
test_pipeline = [
    dict(type='UniformSample', clip_len=3, num_clips=1, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='RawFlowDecode'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False, lazy=True),
    dict(type='FuseFlow'),
    dict(type='Fuse'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs', collect_keys=('imgs', 'flows'),
         # sample_idx seeds the per-sample noise of randomized
         # smoothing (docs/certification.md).
         meta_keys=('img_shape', 'img_key', 'video_id', 'timestamp',
                    'sample_idx')),
]


def _split(name, pipeline, test_mode):
    return dict(
        type=dataset_type,
        ann_file=f'{data_root}/ucf101_{name}_split_{split}_rawframes.txt',
        data_prefix=dict(img=f'{data_root}/rawframes'),
        filename_tmpl='img_{:05d}.jpg',
        num_classes=num_classes,
        pipeline=pipeline,
        test_mode=test_mode)


train_dataloader = dict(
    batch_size=8,  # per GPU; 8 GPUs x 8 = 64 clips per step
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=_split('train', train_pipeline, False))
val_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_split('val', test_pipeline, True))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric')
