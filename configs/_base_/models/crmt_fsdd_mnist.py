# CRMT model for FSDD-MNIST: the AV-Digits conv encoders resized to its
# inputs (visual one 3x28x28 frame, audio a 96x128 fbank; the audio
# encoder starts at 8 channels, which took 0.11 s instead of 0.30 s per
# forward-backward of a batch of 64 on 2 cores), CRMT head,
# CRMT-JT loss. Nothing here was tuned to favour either modality.
model = dict(
    type='CRMTRecognizer',
    encoders=dict(
        visual=dict(
            input_key='imgs', feat_dim=64, temporal='fold',
            input_shape=(3, 1, 28, 28),
            backbone=dict(type='ConvEncoder', in_channels=3,
                          input_size=(28, 28), channels=(16, 32),
                          feat_dim=64)),
        audio=dict(
            input_key='audios', feat_dim=64, input_shape=(1, 96, 128),
            backbone=dict(type='ConvEncoder', in_channels=1,
                          input_size=(96, 128), channels=(8, 16, 32),
                          feat_dim=64))),
    head=dict(type='CRMTHead', num_classes=10, row_norm='orthonormal',
              init_integration=0.1),
    loss=dict(type='CRMTMarginLoss', rho=2.0, margin_floor=1e-5),
    competitor='min',
    a_constraint='clamp',
    data_preprocessor=dict(
        type='MultiModalDataPreprocessor',
        preprocessors=dict(
            # fsdd_mnist_norm.json of the standard split, seed 0 (checked
            # at start-up by PreparedNormCheckHook).
            imgs=dict(type='ActionDataPreprocessor', mean=[34.82] * 3,
                      std=[55.02] * 3, format_shape='NCTHW'),
            audios=dict(type='ActionDataPreprocessor'))))
