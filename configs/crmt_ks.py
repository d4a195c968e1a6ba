# CRMT-JT on Kinetics-Sounds with the reference's hyper-parameters
# (docs/method.md §9): ResNet-18 x 2 from scratch, CRMT head (orthonormal rows,
# a init 0.1), rho 2.0, delta 1e-5, SGD lr 1e-3 / momentum 0.9 / wd 1e-4,
# batch 64 (4 GPUs x 16), StepLR(60, 0.1), 140 step-1 epochs, then 45
# step-2 epochs on a^(m) (lr 3e-5, momentum 0.9, wd 1e-2), seed 2024.
_base_ = [
    '_base_/models/crmt_resnet18_av.py', '_base_/datasets/kinetics_sounds.py',
    '_base_/schedules/sgd_crmt_ks.py', '_base_/evaluation/robust_ks.py',
    '_base_/default_runtime.py'
]
randomness = dict(seed=2024, deterministic=True)
