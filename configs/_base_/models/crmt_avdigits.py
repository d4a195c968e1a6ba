# CRMT model for AV-Digits: small conv encoders (visual 3x32x32 frames
# folded into the batch, audio 64x64 log-mel), CRMT head, CRMT-JT loss.
model = dict(
    type='CRMTRecognizer',
    encoders=dict(
        visual=dict(
            input_key='imgs', feat_dim=64, temporal='fold',
            input_shape=(3, 3, 32, 32),
            backbone=dict(type='ConvEncoder', in_channels=3,
                          input_size=(32, 32), channels=(16, 32),
                          feat_dim=64)),
        audio=dict(
            input_key='audios', feat_dim=64, input_shape=(1, 64, 64),
            backbone=dict(type='ConvEncoder', in_channels=1,
                          input_size=(64, 64), channels=(16, 32, 32),
                          feat_dim=64))),
    head=dict(type='CRMTHead', num_classes=10, row_norm='orthonormal',
              init_integration=0.1),
    loss=dict(type='CRMTMarginLoss', rho=2.0,
              margin_floor=1e-5),
    competitor='min',
    a_constraint='clamp',
    data_preprocessor=dict(
        type='MultiModalDataPreprocessor',
        preprocessors=dict(
            imgs=dict(type='ActionDataPreprocessor', mean=[106.09] * 3,
                      std=[31.58] * 3, format_shape='NCTHW'),
            audios=dict(type='ActionDataPreprocessor'))))
