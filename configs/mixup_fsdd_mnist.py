# Mixup baseline on FSDD-MNIST: joint training with mixup, no margin term.
_base_ = ['./jt_fsdd_mnist.py']
model = dict(loss=dict(rho=0.0), train_perturbation=dict(type='Mixup',
                                                         alpha=1.0))
