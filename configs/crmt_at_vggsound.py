# CRMT-AT on VGGSound: step-1 loss on adversarial inputs only (joint L2
# PGD, eps 0.1, 5 steps; crmt.md §4).
_base_ = ['./crmt_vggsound.py']
model = dict(loss=dict(variant='AT', at_eps=0.1, at_steps=5,
                       at_bn='frozen_stats', at_clamp=False))
