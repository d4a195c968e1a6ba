"""CRMT step 2 in CRMTTrainLoop: cached and streaming give the same a, and
the cached step honours gradient accumulation (it goes through
``optim_wrapper.update_params``)."""
import pytest
import torch
from mmengine.runner import Runner

from helpers import tiny_config

NUM_TRAIN = 30  # the avdigits_tiny fixture: 3 train clips x 10 classes


def step2_run(root, work_dir, mode, batch_size, accumulative_counts=1):
    """Step 2 from epoch 0 (switch_epoch=0) for 2 epochs, no validation.

    AV-Digits' training pipeline is deterministic, so cached logits are
    exact. The cached loop shuffles with its own seeded permutation and the
    streaming loop with the sampler's, so to compare the two the whole
    training set is one batch (the loss is a mean: order does not matter)
    and the sampler does not shuffle.
    """
    cfg = tiny_config('crmt_avdigits.py', root, work_dir,
                      train_cfg=dict(max_epochs=2, phase2_mode=mode))
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.sampler.shuffle = False
    cfg.custom_hooks[0].switch_epoch = 0
    cfg.default_hooks.checkpoint.interval = 100
    cfg.optim_wrapper.accumulative_counts = accumulative_counts
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    assert int(model.phase) == 2
    return model.integration_weights().detach().clone()


@pytest.fixture(scope='module')
def cached_full_batch(avdigits_tiny, tmp_path_factory):
    return step2_run(avdigits_tiny, str(tmp_path_factory.mktemp('cached')),
                     'cached', NUM_TRAIN)


def test_cached_equals_streaming(avdigits_tiny, tmp_path, cached_full_batch):
    streaming = step2_run(avdigits_tiny, str(tmp_path), 'streaming',
                          NUM_TRAIN)
    initial = 0.1  # head init_integration: a moved, and moved alike
    assert not torch.allclose(cached_full_batch,
                              torch.full_like(streaming, initial))
    assert torch.allclose(cached_full_batch, streaming, rtol=1e-5, atol=1e-7)


def test_cached_accumulation_equals_the_doubled_batch(avdigits_tiny, tmp_path,
                                                      cached_full_batch):
    half = step2_run(avdigits_tiny, str(tmp_path), 'cached', NUM_TRAIN // 2,
                     accumulative_counts=2)
    assert torch.allclose(half, cached_full_batch, rtol=1e-5, atol=1e-7)
