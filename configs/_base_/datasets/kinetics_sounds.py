# Kinetics-Sounds, 31 classes (docs/method.md §9, §11). Prepare with
# tools/data/ (frames at 1 fps as img_{:05d}.jpg + fbank features
# [1024, 128] .npy + rawframe lists). Visual: 3 frames, one per third of
# the clip; train RandomResizedCrop 224 + flip, test resize to 224x224.
dataset_type = 'AudioVisualDataset'
data_root = 'data/kinetics_sounds'
num_classes = 31

train_pipeline = [
    dict(type='UniformSample', clip_len=3, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='LoadCRMTAudio', audio_shape=(1024, 128)),
    dict(type='PackActionInputs', collect_keys=('imgs', 'audios')),
]
test_pipeline = [
    dict(type='UniformSample', clip_len=3, num_clips=1, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='LoadCRMTAudio', audio_shape=(1024, 128)),
    dict(type='PackActionInputs', collect_keys=('imgs', 'audios'),
         # sample_idx seeds the per-sample noise of randomized
         # smoothing (docs/certification.md).
         meta_keys=('img_shape', 'img_key', 'video_id', 'timestamp',
                    'sample_idx')),
]


def _split(name, pipeline, test_mode):
    return dict(
        type=dataset_type,
        ann_file=f'{data_root}/ks_{name}.txt',
        data_prefix=dict(img=f'{data_root}/rawframes',
                         audio=f'{data_root}/audio'),
        filename_tmpl='img_{:05d}.jpg',
        audio_shape=(1024, 128),
        num_classes=num_classes,
        pipeline=pipeline,
        test_mode=test_mode)


train_dataloader = dict(
    batch_size=16,  # per GPU; 4 GPUs x 16 = the reference's 64
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=_split('train', train_pipeline, False))
val_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_split('test', test_pipeline, True))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric')
