# MMAT baseline: joint training with adversarial training, no margin term.
_base_ = ['./jt_ks.py']
model = dict(loss=dict(rho=0.0),
             train_perturbation=dict(type='MultiModalPGD', eps=0.1, steps=5))
