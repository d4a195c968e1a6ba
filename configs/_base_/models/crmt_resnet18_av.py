# CRMT's Kinetics-Sounds model (docs/method.md §2, §9): one ResNet-18 per modality
# from scratch, D = 512; visual frames folded into the batch and averaged,
# audio fbank [1, 1024, 128] through a 1-channel ResNet-18.
model = dict(
    type='CRMTRecognizer',
    encoders=dict(
        visual=dict(
            input_key='imgs', feat_dim=512, temporal='fold',
            input_shape=(3, 3, 224, 224),
            backbone=dict(type='ResNet', depth=18, pretrained=None,
                          in_channels=3, norm_eval=False)),
        audio=dict(
            input_key='audios', feat_dim=512, input_shape=(1, 1024, 128),
            backbone=dict(type='ResNet', depth=18, pretrained=None,
                          in_channels=1, norm_eval=False))),
    head=dict(type='CRMTHead', num_classes=31, row_norm='orthonormal',
              init_integration=0.1),
    loss=dict(type='CRMTMarginLoss', rho=2.0,
              margin_floor=1e-5),
    competitor='min',
    a_constraint='clamp',
    data_preprocessor=dict(
        type='MultiModalDataPreprocessor',
        preprocessors=dict(
            imgs=dict(type='ActionDataPreprocessor',
                      mean=[123.675, 116.28, 103.53],
                      std=[58.395, 57.12, 57.375], format_shape='NCTHW'),
            # fbank features are stored normalised: no mean/std here.
            audios=dict(type='ActionDataPreprocessor'))))
