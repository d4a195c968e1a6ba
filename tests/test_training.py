"""Two-phase CRMT training through the real mmengine Runner."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

from crmt_mm.compat import safe_torch_load
from crmt_mm.models.recognizers.crmt_recognizer import NonFiniteLossError
from helpers import tiny_config


def load_state(path):
    return safe_torch_load(path)['state_dict']


def run(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def crmt_cfg(root, work_dir, max_epochs=3, switch=1, **options):
    cfg = tiny_config('crmt_avdigits.py', root, work_dir, **options)
    cfg.train_cfg.max_epochs = max_epochs
    cfg.custom_hooks[0].switch_epoch = switch
    return cfg


def test_jt_trains_and_logs_modality_accuracy(avdigits_tiny, tmp_path):
    cfg = tiny_config('jt_avdigits.py', avdigits_tiny, str(tmp_path),
                      train_cfg=dict(max_epochs=1))
    runner = run(cfg)
    scalars = runner.message_hub.log_scalars
    for key in ('train/loss', 'train/loss_cls', 'train/acc_visual',
                'train/acc_audio', 'train/acc_fused'):
        assert key in scalars, key
    assert 'train/loss_margin' not in scalars  # rho = 0 for JT
    model = runner.model
    assert int(model.phase) == 1 and not model.tau.any()


@pytest.mark.parametrize('mode', ['cached', 'streaming'])
def test_phase_switch_trains_only_integration_weights(avdigits_tiny,
                                                      tmp_path, mode):
    runner = run(crmt_cfg(avdigits_tiny, str(tmp_path),
                          train_cfg=dict(phase2_mode=mode)))
    model = runner.model
    assert int(model.phase) == 2
    assert (model.tau > 0).all()
    assert (model.integration_weights() >= 0).all()  # a_constraint=clamp
    assert 'train/radius_mean' in runner.message_hub.log_scalars
    before = load_state(osp.join(str(tmp_path), 'epoch_1.pth'))
    after = load_state(osp.join(str(tmp_path), 'epoch_3.pth'))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {'head.integration', 'phase', 'tau'}
    # encoders stay in eval mode in phase 2, even after model.train()
    model.train()
    assert not any(m.training for m in model.encoders.modules())


def test_resume_after_switch_matches_uninterrupted_run(avdigits_tiny,
                                                       tmp_path):
    full = run(crmt_cfg(avdigits_tiny, str(tmp_path / 'full')))
    part_dir = str(tmp_path / 'part')
    run(crmt_cfg(avdigits_tiny, part_dir, max_epochs=2))
    resumed = crmt_cfg(avdigits_tiny, part_dir, resume=True)
    resumed = run(resumed)
    assert int(resumed.model.phase) == 2
    assert torch.equal(resumed.model.tau, full.model.tau)
    assert torch.allclose(resumed.model.integration_weights(),
                          full.model.integration_weights(), atol=1e-7)


def test_switch_epoch_beyond_max_epochs_is_rejected(avdigits_tiny,
                                                    tmp_path):
    cfg = crmt_cfg(avdigits_tiny, str(tmp_path), max_epochs=2, switch=2)
    with pytest.raises(ValueError, match='switch_epoch'):
        run(cfg)


def test_non_finite_loss_stops_with_clear_error(avdigits_tiny, tmp_path):
    cfg = tiny_config('jt_avdigits.py', avdigits_tiny, str(tmp_path),
                      train_cfg=dict(max_epochs=3))
    cfg.optim_wrapper.optimizer = dict(type='SGD', lr=1e12)
    with pytest.raises(NonFiniteLossError) as info:
        run(cfg)
    message = str(info.value)
    assert 'iteration' in message and 'Last good checkpoint' in message
    assert '--resume' in message


def test_checkpoint_from_jt_cannot_feed_crmt(avdigits_tiny, tmp_path):
    jt_dir = str(tmp_path / 'jt')
    run(tiny_config('jt_avdigits.py', avdigits_tiny, jt_dir,
                    train_cfg=dict(max_epochs=1)))
    ckpt = glob.glob(osp.join(jt_dir, 'epoch_1.pth'))[0]
    cfg = crmt_cfg(avdigits_tiny, str(tmp_path / 'crmt'), load_from=ckpt,
                   resume=True)
    with pytest.raises(Exception, match='integration'):
        run(cfg)


def test_release_loader_workers_stops_persistent_pools(avdigits_tiny,
                                                      tmp_path):
    """After a run, the runner's persistent worker pools stop at once and a
    later run over the same loaders starts fresh ones."""
    from crmt_mm.utils import release_loader_workers
    cfg = tiny_config('jt_avdigits.py', avdigits_tiny, str(tmp_path),
                      **{'train_cfg.max_epochs': 1})
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(num_workers=1, persistent_workers=True)
    runner = Runner.from_cfg(cfg)
    runner.train()
    workers = runner.train_dataloader._iterator._workers
    assert release_loader_workers(runner) == 2  # train, val (last epoch)
    assert runner.train_dataloader._iterator is None
    assert not any(w.is_alive() for w in workers)
    first = runner.test()
    assert release_loader_workers(runner) == 1
    assert runner.test() == first
    assert release_loader_workers(Runner.from_cfg(cfg)) == 0  # nothing built
