# Joint-training baseline on Kinetics-Sounds: the step-1 schedule of CRMT
# (SGD lr 1e-3, StepLR(60, 0.1), 140 epochs), no step 2.
_base_ = ['./sgd_crmt_ks.py']
phase2_epochs = 0
train_cfg = dict(max_epochs=140)
custom_hooks = []
