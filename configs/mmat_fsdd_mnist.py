# MMAT baseline on FSDD-MNIST: joint training with adversarial training
# (joint L2 PGD, eps 0.5, 2 steps), no margin term.
_base_ = ['./jt_fsdd_mnist.py']
model = dict(loss=dict(rho=0.0),
             train_perturbation=dict(type='MultiModalPGD', eps=0.5, steps=2))
