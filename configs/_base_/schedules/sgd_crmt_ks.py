# CRMT's Kinetics-Sounds schedule (docs/method.md §9): SGD lr 1e-3, momentum 0.9,
# weight decay 1e-4 (a^(m) included), StepLR(60, 0.1) over 140 step-1
# epochs, then 45 step-2 epochs on a^(m) only (lr 0.03 x 1e-3 = 3e-5,
# momentum 0.9, weight decay 1e-2).
phase1_epochs = 140
phase2_epochs = 45

train_cfg = dict(type='CRMTTrainLoop', phase2_mode='cached',
                 max_epochs=phase1_epochs + phase2_epochs,
                 val_begin=1, val_interval=5)
val_cfg = dict(type='ValLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, weight_decay=1e-4),
    # Tags the integration weights' param group for CRMTPhaseSwitchHook.
    paramwise_cfg=dict(
        custom_keys={'head.integration': dict(crmt_group='integration')}),
    clip_grad=None)

# Step-1 schedulers must end at the switch: mmengine schedulers chain, and
# the hook sets the step-2 lr from the configured base lr.
param_scheduler = [
    dict(type='StepLR', by_epoch=True, step_size=60, gamma=0.1, begin=0,
         end=phase1_epochs)
]
custom_hooks = [
    dict(type='CRMTPhaseSwitchHook', switch_epoch=phase1_epochs,
         lr_factor=0.03, momentum=0.9, weight_decay=1e-2)
]
# Reference: 4 GPUs x 16 = 64 clips per step.
auto_scale_lr = dict(enable=False, base_batch_size=64)
