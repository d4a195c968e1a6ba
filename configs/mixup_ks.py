# Mixup baseline: joint training with mixup, no margin term.
_base_ = ['./jt_ks.py']
model = dict(loss=dict(rho=0.0), train_perturbation=dict(type='Mixup',
                                                         alpha=1.0))
