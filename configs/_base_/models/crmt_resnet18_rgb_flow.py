# CRMT's two-stream model for UCF101 (docs/method.md §2, §11): the Kinetics-Sounds
# visual ResNet-18 for RGB plus a ResNet-18 with a 2-channel conv1 for the
# (u, v) flow frames, both from scratch, frames folded into the batch and
# averaged. Flow is normalised with the reference's constants, mean 0.1307
# and std 0.3081 on [0, 1] (MNIST's), i.e. x 255 in the stored 0..255 units.
_base_ = ['./crmt_resnet18_av.py']
model = dict(
    encoders=dict(
        _delete_=True,
        visual={{_base_.model.encoders.visual}},
        flow=dict(
            input_key='flows', feat_dim=512, temporal='fold',
            input_shape=(2, 3, 224, 224),
            backbone=dict(type='ResNet', depth=18, pretrained=None,
                          in_channels=2, norm_eval=False))),
    head=dict(num_classes=101),
    data_preprocessor=dict(
        preprocessors=dict(
            _delete_=True,
            imgs={{_base_.model.data_preprocessor.preprocessors.imgs}},
            flows=dict(type='ActionDataPreprocessor',
                       mean=[0.1307 * 255] * 2, std=[0.3081 * 255] * 2,
                       format_shape='NCTHW'))))
