# Mixup baseline: joint training with mixup, no margin term.
_base_ = ['./jt_ks.py']
model = dict(loss=dict(variant='Mix', rho=0.0, mix_alpha=1.0))
