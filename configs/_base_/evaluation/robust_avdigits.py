# Robustness evaluation of the AV-Digits demo (crmt.md §10): clean,
# missing modality (input and feature zeroing), uni-modal FGM and L2 PGD
# (4 steps of eps/3) on each modality over an eps sweep, multi-modal PGD,
# Gaussian noise, and certified accuracy from the model's tau. Budgets are
# per-sample L2 norms in the normalised input space.
eps_sweep = [0.5, 1.0, 2.0, 4.0]
test_cfg = dict(
    type='RobustTestLoop',
    perturbations=[
        dict(type='MissingModality', modality='audio'),
        dict(type='MissingModality', modality='visual'),
        dict(type='MissingModality', modality='audio', mode='feature'),
        dict(type='MissingModality', modality='visual', mode='feature'),
        dict(type='UniModalPGD', modality='audio', eps=eps_sweep),
        dict(type='UniModalPGD', modality='visual', eps=eps_sweep),
        dict(type='UniModalFGM', modality='audio', eps=[1.0, 4.0]),
        dict(type='UniModalFGM', modality='visual', eps=[1.0, 4.0]),
        dict(type='MultiModalPGD', eps=[1.0, 2.0]),
        dict(type='GaussianNoise', modality='audio', sigma=[0.5]),
    ],
    certify=dict(tau_source='model'),
    # Sound certificates of the audio-smoothed classifier (randomized
    # smoothing, docs/certification.md) on a seeded subset of 64 test clips:
    # 576 forwards of one clip's copies each, within the demo's budget.
    smoothing=[dict(type='GaussianSmoothingCertifier', modality='audio',
                    sigma=0.25, n0=64, n=512, alpha=0.001, batch_size=256,
                    seed=0, subset=dict(size=64, seed=0))])
test_evaluator = [
    dict(type='AccMetric'),
    dict(type='RobustAccMetric', worst_case='auto'),
]
