# AV-Digits (embedded; `python tools/data/prepare_avdigits.py data/avdigits`):
# 3 frames of 32x32 handwritten digits + a 64x64 log-mel of a spoken digit.
dataset_type = 'AudioVisualDataset'
data_root = 'data/avdigits'
num_classes = 10

# Every clip has exactly 3 frames and its augmentation (shifts, noise) is
# baked in by the generator, so the pipeline is deterministic: that keeps
# resumed runs identical to uninterrupted ones (mmengine does not checkpoint
# the RNG state of random transforms).
train_pipeline = [
    dict(type='SampleFrames', clip_len=3, frame_interval=1, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='LoadCRMTAudio', audio_shape=(64, 64)),
    dict(type='PackActionInputs', collect_keys=('imgs', 'audios')),
]
test_pipeline = [
    dict(type='SampleFrames', clip_len=3, frame_interval=1, num_clips=1,
         test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='LoadCRMTAudio', audio_shape=(64, 64)),
    dict(type='PackActionInputs', collect_keys=('imgs', 'audios'),
         # sample_idx seeds the per-sample noise of randomized
         # smoothing (docs/certification.md).
         meta_keys=('img_shape', 'img_key', 'video_id', 'timestamp',
                    'sample_idx')),
]


def _split(name, pipeline, test_mode):
    return dict(
        type=dataset_type,
        ann_file=f'{data_root}/avdigits_{name}.txt',
        data_prefix=dict(img=f'{data_root}/rawframes/{name}',
                         audio=f'{data_root}/audio/{name}'),
        filename_tmpl='img_{:05d}.png',
        audio_shape=(64, 64),
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
    dataset=_split('test', test_pipeline, True))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric')
