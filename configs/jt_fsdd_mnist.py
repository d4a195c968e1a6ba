# Joint-training baseline on FSDD-MNIST: concatenation head, cross-entropy
# only; same encoders, data and step-1 schedule as crmt_fsdd_mnist.py.
_base_ = ['./crmt_fsdd_mnist.py']
model = dict(
    head=dict(_delete_=True, type='ConcatHead', num_classes=10),
    loss=dict(rho=0.0))
phase1_epochs = 12
train_cfg = dict(max_epochs=phase1_epochs)
custom_hooks = []
# JT has no tau of its own: estimated on the training set at test time.
# 10 batches (640 of the 2,000 training clips) keep the estimate to about
# 40 s on 2 cores; tau is an empirical estimate either way.
test_cfg = dict(certify=dict(tau_source='estimate', tau_data='train',
                             tau_max_batches=10))
