# CRMT-Mix on FSDD-MNIST: mixup (alpha 1.0, one lambda per batch) with the
# intended mixup margin (docs/method.md).
_base_ = ['./crmt_fsdd_mnist.py']
model = dict(train_perturbation=dict(type='Mixup', alpha=1.0))
