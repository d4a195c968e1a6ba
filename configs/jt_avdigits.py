# Joint-training baseline on AV-Digits: concatenation head, cross-entropy
# only; same encoders, data and step-1 schedule as crmt_avdigits.py.
_base_ = ['./crmt_avdigits.py']
model = dict(
    head=dict(_delete_=True, type='ConcatHead', num_classes=10),
    loss=dict(rho=0.0))
phase1_epochs = 20
train_cfg = dict(max_epochs=phase1_epochs)
custom_hooks = []
# JT has no tau of its own: estimate it on the training set at test time so
# that its certified accuracy can be compared with CRMT's.
test_cfg = dict(certify=dict(tau_source='estimate', tau_data='train'))
