# Joint-training baseline on Kinetics-Sounds: concatenation head + CE.
_base_ = [
    '_base_/models/crmt_resnet18_av.py', '_base_/datasets/kinetics_sounds.py',
    '_base_/schedules/sgd_jt_ks.py', '_base_/evaluation/robust_ks.py',
    '_base_/default_runtime.py'
]
model = dict(
    head=dict(_delete_=True, type='ConcatHead', num_classes=31),
    loss=dict(rho=0.0))
randomness = dict(seed=2024, deterministic=True)
test_cfg = dict(certify=dict(tau_source='estimate', tau_data='train'))
