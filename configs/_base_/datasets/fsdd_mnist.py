# FSDD-MNIST (real data; `python tools/data/prepare_fsdd_mnist.py --fsdd
# FSDD/recordings --mnist MNIST --out data/fsdd_mnist`): one grey 28x28
# PCA-degraded MNIST image per clip + a [96, 128] Kaldi fbank of a real
# spoken digit (FSDD). Not AV-MNIST: docs/datasets.md, "FSDD-MNIST".
dataset_type = 'AudioVisualDataset'
data_root = 'data/fsdd_mnist'
num_classes = 10
audio_shape = (96, 128)

# One frame per clip and no random transform: the pipeline is deterministic,
# so a resumed run equals an uninterrupted one (as for AV-Digits).
train_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='LoadCRMTAudio', audio_shape=audio_shape),
    dict(type='PackActionInputs', collect_keys=('imgs', 'audios')),
]
test_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=1,
         test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='LoadCRMTAudio', audio_shape=audio_shape),
    dict(type='PackActionInputs', collect_keys=('imgs', 'audios'),
         meta_keys=('img_shape', 'img_key', 'video_id', 'timestamp',
                    'sample_idx')),
]


def _split(name, pipeline, test_mode):
    return dict(
        type=dataset_type,
        ann_file=f'{data_root}/fsdd_mnist_{name}.txt',
        data_prefix=dict(img=f'{data_root}/rawframes/{name}',
                         audio=f'{data_root}/audio/{name}'),
        filename_tmpl='img_{:05d}.png',
        audio_shape=audio_shape,
        num_classes=num_classes,
        pipeline=pipeline,
        test_mode=test_mode)


train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=_split('train', train_pipeline, False))
val_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_split('val', test_pipeline, True))
test_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_split('test', test_pipeline, True))
val_evaluator = dict(type='AccMetric')
