# Example (c): a CRMT audio-visual model made of two whole stock mmaction2
# recognizers, referenced by name: mmaction2's TSN-R50 (RGB) and its
# ResNet-18 audio-feature recognizer. Each encoder's `recognizer=` names a
# config file; the recognizer reads only that file's `model` (backbone and
# neck become the branch, cls_head.in_channels the feature size, its data
# preprocessor this modality's MultiModalDataPreprocessor entry), so the
# two stock configs are never merged and their equal keys (model, data,
# schedule) cannot clash. See docs/integration.md.
_base_ = ['mmaction::_base_/default_runtime.py',
          'mmaction::_base_/schedules/sgd_100e.py',
          '../_base_/datasets/kinetics_sounds.py']  # data part
custom_imports = dict(imports=['crmt_mm'], allow_failed_imports=False)
rgb_recognizer = 'mmaction::recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py'  # noqa: E501
audio_recognizer = 'mmaction::recognition_audio/resnet/tsn_r18_8xb320-64x1x1-100e_kinetics400-audio-feature.py'  # noqa: E501
model = dict(
    type='CRMTRecognizer',
    encoders=dict(visual=dict(input_key='imgs', recognizer=rgb_recognizer),
                  audio=dict(input_key='audios', recognizer=audio_recognizer)),
    head=dict(type='CRMTHead', num_classes={{_base_.num_classes}}),
    loss=dict(type='CRMTMarginLoss', rho=2.0))

# Data part: Kinetics-Sounds, with the 3 frames of a clip as TSN's NCHW
# segments (the stock preprocessor's format_shape) instead of NCTHW.
train_pipeline = [
    dict(type='UniformSample', clip_len=3, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='LoadCRMTAudio', audio_shape=(1024, 128)),
    dict(type='PackActionInputs', collect_keys=('imgs', 'audios')),
]
test_pipeline = [
    dict(type='UniformSample', clip_len=3, num_clips=1, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='LoadCRMTAudio', audio_shape=(1024, 128)),
    dict(type='PackActionInputs', collect_keys=('imgs', 'audios')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
test_evaluator = dict(type='AccMetric')
