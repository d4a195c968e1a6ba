# CRMT-AT on FSDD-MNIST: the step-1 loss on adversarial inputs (joint L2
# PGD, eps 0.5, 2 steps, no random start; docs/method.md), the same attack
# as mmat_fsdd_mnist.py. The budget is the smallest of the evaluation sweep;
# 2 steps instead of the KS configs' 5 keep training within minutes.
_base_ = ['./crmt_fsdd_mnist.py']
model = dict(train_perturbation=dict(type='MultiModalPGD', eps=0.5, steps=2,
                                     bn='frozen_stats', clamp=False))
