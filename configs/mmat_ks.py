# MMAT baseline: joint training with adversarial training, no margin term.
_base_ = ['./jt_ks.py']
model = dict(loss=dict(variant='AT', rho=0.0, at_eps=0.1, at_steps=5))
