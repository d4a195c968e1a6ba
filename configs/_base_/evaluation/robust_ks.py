# Robustness evaluation on Kinetics-Sounds as the reference's rob_test.py
# and README figure (crmt.md §10): uni-modal L2 PGD (4 steps of eps/3) and
# FGM on each modality over the figure's radii, multi-modal PGD at 0.2,
# missing modality both ways, and certified accuracy from the model's tau.
radii = [0.1, 0.4, 0.7, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
test_cfg = dict(
    type='RobustTestLoop',
    perturbations=[
        dict(type='UniModalPGD', modality='audio', eps=radii),
        dict(type='UniModalPGD', modality='visual', eps=radii),
        dict(type='UniModalFGM', modality='audio', eps=radii),
        dict(type='UniModalFGM', modality='visual', eps=radii),
        dict(type='MultiModalPGD', eps=[0.2]),
        dict(type='MultiModalFGM', eps=[0.2]),
        dict(type='MissingModality', modality='audio'),
        dict(type='MissingModality', modality='visual'),
        dict(type='MissingModality', modality='audio', mode='feature'),
        dict(type='MissingModality', modality='visual', mode='feature'),
    ],
    certify=dict(tau_source='model'),
    # Paper-grade randomized smoothing (Cohen et al.'s n0=100, n=100,000,
    # alpha=0.001) on the audio of a seeded subset of 500 test clips: see
    # docs/certification.md for the cost per clip.
    smoothing=[dict(type='GaussianSmoothingCertifier', modality='audio',
                    sigma=0.25, n0=100, n=100000, alpha=0.001,
                    batch_size=256, seed=0, subset=dict(size=500, seed=0))])
test_evaluator = [
    dict(type='AccMetric'),
    dict(type='RobustAccMetric', worst_case='auto'),
]
