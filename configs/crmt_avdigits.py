# CRMT-JT on the embedded AV-Digits dataset (the demo's CRMT model).
_base_ = [
    '_base_/models/crmt_avdigits.py', '_base_/datasets/avdigits.py',
    '_base_/schedules/avdigits.py', '_base_/evaluation/robust_avdigits.py',
    '_base_/default_runtime.py'
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=5))
