# Joint-training baseline on VGGSound: concatenation head + CE, step 1 only.
_base_ = ['./crmt_vggsound.py']
model = dict(
    head=dict(_delete_=True, type='ConcatHead',
              num_classes={{_base_.num_classes}}),
    loss=dict(rho=0.0))
train_cfg = dict(max_epochs={{_base_.phase1_epochs}})
custom_hooks = []
# JT has no tau of its own: estimate it on the training set at test time.
test_cfg = dict(certify=dict(tau_source='estimate', tau_data='train'))
