# CRMT-AT on Kinetics-Sounds: step-1 loss on adversarial inputs only (joint
# L2 PGD, eps 0.1, 5 steps of 0.02, no random start; docs/method.md).
_base_ = ['./crmt_ks.py']
model = dict(train_perturbation=dict(type='MultiModalPGD', eps=0.1, steps=5,
                                     bn='frozen_stats', clamp=False))
