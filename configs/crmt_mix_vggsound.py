# CRMT-Mix on VGGSound: mixup (alpha 1.0, one lambda per batch) with the
# intended mixup margin (crmt.md §5).
_base_ = ['./crmt_vggsound.py']
model = dict(loss=dict(variant='Mix', mix_alpha=1.0))
