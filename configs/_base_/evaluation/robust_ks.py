# Robustness evaluation on Kinetics-Sounds over the radii of the CRMT
# README figure. Budgets are per-sample L2 norms in the normalised input
# space.
#
# * The strong protocol: the AutoAttack-style ensemble (APGD-CE, APGD-T
#   over 9 targets, Square; survivor-only, nested budgets) per modality over
#   the radii and jointly at 0.2; trust checks on (docs/evaluation.md).
# * The 'reference' protocol of the original rob_test.py, kept for parity:
#   uni-modal L2 PGD (4 steps of eps/3) and FGM, multi-modal PGD/FGM at 0.2.
# * Missing modality both ways, and certified accuracy from the model's tau.
radii = [0.1, 0.4, 0.7, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
strong = dict(type='MultiModalAutoAttack', version='standard', norm='L2')
test_cfg = dict(
    type='RobustTestLoop',
    perturbations=[
        dict(strong, modality='audio', eps=radii),
        dict(strong, modality='visual', eps=radii),
        dict(strong, eps=[0.2]),  # joint budget over both modalities
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
    subset=None,
    trust=True,
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
