# Example (b): add only crmt_mm's robustness evaluation to an existing
# config, here example (a). Any model with the crmt_mm recognizer contract
# qualifies (CRMTRecognizer with CRMTHead, or the JT ConcatHead);
# `python tools/test.py THIS_CONFIG CHECKPOINT` then reports clean,
# attacked, missing-modality and certified accuracies (docs/evaluation.md).
_base_ = ['./crmt_from_mmaction_bases.py']
custom_imports = dict(imports=['crmt_mm'], allow_failed_imports=False)
test_cfg = dict(
    _delete_=True,
    type='RobustTestLoop',
    perturbations=[
        dict(type='UniModalPGD', modality='audio', eps=[0.1, 0.4, 1.0]),
        dict(type='UniModalPGD', modality='visual', eps=[0.1, 0.4, 1.0]),
        dict(type='MultiModalPGD', eps=[0.2]),
        dict(type='MissingModality', modality='audio'),
        dict(type='MissingModality', modality='visual'),
    ],
    # The tau written by CRMTPhaseSwitchHook; for a model without step 2
    # use dict(tau_source='estimate', tau_data='train').
    certify=dict(tau_source='model'))
test_evaluator = [
    dict(type='AccMetric'),
    dict(type='RobustAccMetric', worst_case='auto'),
]
