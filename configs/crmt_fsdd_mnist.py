# CRMT-JT on FSDD-MNIST (real spoken + handwritten digits). Prepare the data
# first (docs/datasets.md, "FSDD-MNIST"). Schedule: the AV-Digits recipe
# (Adam lr 2e-3, step 2 at 0.3 x lr on a^(m) with cached logits) shortened
# to 12 + 3 epochs of the 2,000 training clips: JT's validation accuracy
# is flat after about 5 epochs, and the whole study must fit 2 CPU cores.
_base_ = [
    '_base_/models/crmt_fsdd_mnist.py', '_base_/datasets/fsdd_mnist.py',
    '_base_/schedules/avdigits.py', '_base_/evaluation/robust_avdigits.py',
    '_base_/default_runtime.py'
]
phase1_epochs = 12
phase2_epochs = 3
train_cfg = dict(max_epochs=phase1_epochs + phase2_epochs, val_interval=3)
custom_hooks = [
    dict(type='CRMTPhaseSwitchHook', switch_epoch=phase1_epochs,
         lr_factor=0.3, weight_decay=1e-2)
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=3),
                     norm_check=dict(type='PreparedNormCheckHook',
                                     norm_file='fsdd_mnist_norm.json'))
