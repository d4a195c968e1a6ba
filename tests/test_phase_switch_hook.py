"""CRMTPhaseSwitchHook, one test per hook method, on a real mmengine Runner
(built from the AV-Digits demo config, not trained), and the step-2 param
group helper."""
import copy

import pytest
import torch
from mmengine.hooks import RuntimeInfoHook
from mmengine.runner import Runner

from crmt_mm.engine import CRMTPhaseSwitchHook
from crmt_mm.engine.optim_groups import (configure_phase2_groups,
                                         integration_groups)
from helpers import tiny_config

BASE_LR = 2e-3  # configs/_base_/schedules/avdigits.py


@pytest.fixture(scope='module')
def shared_runner(avdigits_tiny, tmp_path_factory):
    """One Runner for the module (building one is the slow part)."""
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny,
                      str(tmp_path_factory.mktemp('hook')),
                      train_cfg=dict(max_epochs=2))
    cfg.custom_hooks = []
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    runner = Runner.from_cfg(cfg)
    state = copy.deepcopy(runner.model.state_dict())
    return runner, state, optim_cfg


def make_runner(shared_runner, switch_epoch=0, **hook):
    """The shared runner back in its initial state, and a new hook."""
    runner, state, optim_cfg = shared_runner
    runner.model.load_state_dict(state)  # phase 1, tau = 0 (buffers)
    for p in runner.model.parameters():
        p.requires_grad_(True)
        p.grad = None
    runner.model.train()
    runner.optim_wrapper = runner.build_optim_wrapper(
        copy.deepcopy(optim_cfg))
    hook = CRMTPhaseSwitchHook(switch_epoch=switch_epoch, tau_max_batches=1,
                               **hook)
    return runner, hook


def give_state(runner):
    """Momentum state for every parameter, as after some step-1 steps."""
    for p in runner.model.parameters():
        p.grad = torch.ones_like(p)
    runner.optim_wrapper.step()
    runner.optim_wrapper.zero_grad()


def a_groups(runner):
    return integration_groups(runner.optim_wrapper.optimizer,
                              runner.model.integration_parameters())


@pytest.fixture
def runner_and_hook(shared_runner):
    return make_runner(shared_runner, lr_factor=0.3, weight_decay=0.05)


def test_switch_sets_phase_tau_freezing_groups_and_forgets_step1_logs(
        runner_and_hook):
    runner, hook = runner_and_hook
    model = runner.model
    give_state(runner)
    runner.message_hub.update_scalar('train/loss_cls', 2.0)
    runner.message_hub.update_scalar('train/acc_audio', 0.5)
    runner.message_hub.update_scalar('train/time', 0.1)
    with torch.no_grad():
        model.head.integration[0, 0] = -1.0
    hook._switch(runner, model)
    assert int(model.phase) == 2 and (model.tau > 0).all()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'head.integration'}
    assert not any(m.training for m in model.encoders.modules())
    # a_constraint='clamp'
    assert float(model.head.integration.detach().min()) >= 0
    optimizer = runner.optim_wrapper.optimizer
    for group in a_groups(runner):
        assert group['lr'] == pytest.approx(0.3 * BASE_LR)
        assert group['weight_decay'] == 0.05
        assert all(p not in optimizer.state for p in group['params'])
    # other groups keep lr and state
    others = [g for g in optimizer.param_groups if g not in a_groups(runner)]
    assert others and all(g['lr'] == BASE_LR for g in others)
    assert all(p in optimizer.state for g in others for p in g['params'])
    scalars = runner.message_hub.log_scalars
    assert 'train/loss_cls' not in scalars
    assert 'train/acc_audio' not in scalars
    assert 'train/time' in scalars


def test_before_train_epoch_switches_at_switch_epoch_only(shared_runner):
    runner, hook = make_runner(shared_runner, switch_epoch=1)
    hook.before_train_epoch(runner)  # epoch 0 < 1
    assert int(runner.model.phase) == 1
    assert all(p.requires_grad for p in runner.model.parameters())
    hook.switch_epoch = 0
    hook.before_train_epoch(runner)
    assert int(runner.model.phase) == 2


@pytest.mark.parametrize('reset', ['switch', 'epoch'])
def test_before_train_epoch_in_phase2_resets_state_per_epoch_if_asked(
        runner_and_hook, reset):
    runner, hook = runner_and_hook
    hook.reset_momentum = reset
    hook.before_train_epoch(runner)  # the switch
    give_state(runner)
    for group in a_groups(runner):
        group['lr'] = 1e-5  # e.g. set by a step-2 scheduler
    hook.before_train_epoch(runner)  # a later step-2 epoch
    optimizer = runner.optim_wrapper.optimizer
    for group in a_groups(runner):
        assert group['lr'] == 1e-5  # only the state is reset
        cleared = all(p not in optimizer.state for p in group['params'])
        assert cleared == (reset == 'epoch')


def test_before_train_iter_logs_the_integration_lr_in_phase2(
        runner_and_hook):
    runner, hook = runner_and_hook
    info = RuntimeInfoHook()
    info.before_train_iter(runner, 0)
    hook.before_train_iter(runner, 0)
    first = runner.optim_wrapper.get_lr()['lr'][0]
    assert runner.message_hub.get_scalar('train/lr').current() == first
    hook.before_train_epoch(runner)  # switch
    info.before_train_iter(runner, 0)
    hook.before_train_iter(runner, 0)
    expected = 0.3 * BASE_LR
    assert runner.optim_wrapper.get_lr()['lr'][0] == BASE_LR  # frozen group
    assert runner.message_hub.get_scalar('train/lr').current() == \
        pytest.approx(expected)
    runner.message_hub.update_scalar('train/time', 0.1)
    runner.message_hub.update_scalar('train/data_time', 0.01)
    _, line = runner.log_processor.get_log_after_iter(runner, 0, 'train')
    assert f'lr: {expected:.4e}' in line


def test_after_train_iter_clamps_a_in_phase2_only(runner_and_hook):
    runner, hook = runner_and_hook
    model = runner.model
    with torch.no_grad():
        model.head.integration[0, 0] = -1.0
    hook.after_train_iter(runner, 0)
    # step 1: untouched
    assert float(model.head.integration.detach()[0, 0]) == -1.0
    model.phase.fill_(2)
    hook.after_train_iter(runner, 0)
    assert float(model.head.integration.detach()[0, 0]) == 0.0


def test_before_train_checks_and_replays_a_resumed_phase2(shared_runner):
    runner, hook = make_runner(shared_runner, switch_epoch=2)
    with pytest.raises(ValueError, match='switch_epoch=2 must be < '
                       'train_cfg.max_epochs=2'):
        hook.before_train(runner)
    hook.switch_epoch = 1
    hook.before_train(runner)  # phase 1: nothing to replay
    assert all(p.requires_grad for p in runner.model.parameters())
    model = runner.model
    model.phase.fill_(2)  # as loaded from a step-2 checkpoint
    model.tau.fill_(0.5)
    hook.before_train(runner)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        'head.integration'}
    assert not any(m.training for m in model.encoders.modules())
    assert torch.equal(model.tau, torch.full_like(model.tau, 0.5))
    # a step-2 checkpoint without tau: estimated again, with a warning
    model.tau.zero_()
    hook.before_train(runner)
    assert (model.tau > 0).all()


def test_configure_phase2_groups_lr_from_initial_lr_and_errors():
    a = torch.nn.Parameter(torch.ones(2, 3))
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([dict(params=[w]), dict(params=[a])],
                                lr=0.1, momentum=0.5)
    optimizer.param_groups[1]['initial_lr'] = 0.2
    (a.sum() + w.sum()).backward()
    optimizer.step()
    groups = configure_phase2_groups(optimizer, [a], 0.5, 0.9, 1e-2)
    assert groups == [optimizer.param_groups[1]]
    assert groups[0]['lr'] == 0.1 and groups[0]['momentum'] == 0.9
    assert groups[0]['weight_decay'] == 1e-2
    assert a not in optimizer.state and w in optimizer.state
    assert optimizer.param_groups[0]['lr'] == 0.1
    with pytest.raises(RuntimeError, match='no optimizer param group'):
        integration_groups(optimizer, [torch.nn.Parameter(torch.ones(1))])
