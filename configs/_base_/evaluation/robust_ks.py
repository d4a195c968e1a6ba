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
    certify=dict(tau_source='model'))
test_evaluator = [
    dict(type='AccMetric'),
    dict(type='RobustAccMetric', worst_case='auto'),
]
