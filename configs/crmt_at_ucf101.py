# CRMT-AT on UCF101 (RGB + flow): step-1 loss on adversarial inputs only
# (joint L2 PGD, eps 0.1, 5 steps; docs/method.md).
_base_ = ['./crmt_ucf101.py']
model = dict(train_perturbation=dict(type='MultiModalPGD', eps=0.1, steps=5,
                                     bn='frozen_stats', clamp=False))
