# Demo schedule for AV-Digits on a CPU: step 1 for `phase1_epochs`, then
# step 2 on a^(m) for `phase2_epochs`.
phase1_epochs = 20
phase2_epochs = 5

train_cfg = dict(type='CRMTTrainLoop', phase2_mode='cached',
                 max_epochs=phase1_epochs + phase2_epochs,
                 val_begin=1, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(
        custom_keys={'head.integration': dict(crmt_group='integration')}))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, T_max=phase1_epochs,
         eta_min=1e-3, begin=0, end=phase1_epochs)
]
custom_hooks = [
    dict(type='CRMTPhaseSwitchHook', switch_epoch=phase1_epochs,
         lr_factor=0.03, momentum=0.9, weight_decay=1e-2)
]
auto_scale_lr = dict(enable=False, base_batch_size=64)
randomness = dict(seed=0, deterministic=False)
