# CRMT-JT on the embedded AV-Digits dataset (the demo's CRMT model).
_base_ = [
    '_base_/models/crmt_avdigits.py', '_base_/datasets/avdigits.py',
    '_base_/schedules/avdigits.py', '_base_/evaluation/robust_avdigits.py',
    '_base_/default_runtime.py'
]
# The visual mean/std of the model's data preprocessor must be those of the
# prepared data (avdigits_norm.json next to the annotation files); data made
# with other generator settings is refused with the values to use.
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=5),
                     norm_check=dict(type='PreparedNormCheckHook',
                                     norm_file='avdigits_norm.json'))
