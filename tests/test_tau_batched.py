"""Batched one-hot VJPs for tau, and the shared loader-level estimate."""
import warnings

import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from crmt_mm.certification import estimate_tau, estimate_tau_on_loader
from crmt_mm.certification.lipschitz import resolve_class_chunk
from crmt_mm.engine.hooks.phase_switch_hook import CRMTPhaseSwitchHook
from helpers import config_path, tiny_config

init_default_scope('mmaction')


def build(config, **encoder_shapes):
    cfg = Config.fromfile(config_path(config)).model
    for name, shape in encoder_shapes.items():
        cfg.encoders[name].input_shape = shape
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()


def random_batches(model, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{m: torch.randn((b, 1) + e.input_shape, generator=g)
             for m, e in model.encoders.items()} for b in sizes]


def tau_of(model, batches, **kwargs):
    return estimate_tau(model.modality_logits, batches, model.modalities,
                        model.num_classes, **kwargs)['tau']


@pytest.mark.parametrize('chunk', [2, 3, 10, 64])
def test_batched_equals_loop_avdigits(chunk):
    # The batched VJP back-propagates the same one-hot cotangents as
    # ``z[:, :, k].sum()``, but vmap runs each backward op once over C x B
    # samples, so the CPU kernels may block and sum in another order: equal
    # up to float32 rounding (bitwise for some batch shapes, not all).
    model = build('_base_/models/crmt_avdigits.py')
    batches = random_batches(model, (5, 3))
    torch.testing.assert_close(tau_of(model, batches, class_chunk=chunk),
                               tau_of(model, batches), rtol=1e-6, atol=0)


def test_batched_equals_loop_on_a_class_subset():
    model = build('_base_/models/crmt_avdigits.py')
    batches = random_batches(model, (4, ))
    loop = tau_of(model, batches, classes=[1, 4, 7])
    torch.testing.assert_close(
        tau_of(model, batches, classes=[1, 4, 7], class_chunk=2), loop,
        rtol=1e-6, atol=0)
    assert loop[:, [0, 2, 3, 5, 6, 8, 9]].eq(0).all()


def test_batched_equals_loop_mmaction_resnet18():
    # mmaction2's ResNet-18 (BatchNorm in eval mode, max-pool, adaptive
    # pooling) has vmap rules for every backward op: no fallback warning.
    model = build('_base_/models/crmt_resnet18_av.py',
                  visual=(3, 1, 32, 32), audio=(1, 32, 32))
    batches = random_batches(model, (2, ))
    classes = [0, 5, 17, 30]
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        batched = tau_of(model, batches, classes=classes, class_chunk=4)
    loop = tau_of(model, batches, classes=classes)
    assert (loop[:, classes] > 0).all()
    torch.testing.assert_close(batched, loop, rtol=1e-6, atol=0)


class _NoVmapSquare(torch.autograd.Function):
    """x**2 whose backward branches on data, which vmap cannot batch."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        if bool(grad.abs().sum() >= 0):  # data-dependent control flow
            return 2 * x * grad
        return grad


def test_unbatchable_op_falls_back_to_loop_with_warning():
    weight = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))

    def logits(x):
        return {m: _NoVmapSquare.apply(v) @ weight.T for m, v in x.items()}

    g = torch.Generator().manual_seed(1)
    batches = [{m: torch.randn(3, 6, generator=g) for m in ('a', 'b')}
               for _ in range(2)]
    loop = estimate_tau(logits, batches, ['a', 'b'], 2)['tau']
    with pytest.warns(RuntimeWarning, match='falling back'):
        batched = estimate_tau(logits, batches, ['a', 'b'], 2,
                               class_chunk=2)['tau']
    assert torch.equal(batched, loop)
    # the closed form: d/dx (x^2 . w_k) = 2 x * w_k
    x = torch.cat([b['a'] for b in batches])
    expect = (2 * x[:, None, :] * weight[None]).norm(dim=2).amax(0)
    torch.testing.assert_close(loop[0], expect)


@pytest.mark.parametrize('bad', [0, -2, 1.5, 'fast', True])
def test_class_chunk_is_validated(bad):
    model = build('_base_/models/crmt_avdigits.py')
    with pytest.raises(ValueError, match='class_chunk'):
        tau_of(model, random_batches(model, (1, )), class_chunk=bad)
    with pytest.raises(ValueError, match='tau_class_chunk'):
        CRMTPhaseSwitchHook(switch_epoch=1, tau_class_chunk=bad)


def test_auto_chunk_is_loop_on_cpu_and_batched_on_cuda():
    assert resolve_class_chunk('auto', torch.device('cpu')) is None
    assert resolve_class_chunk('auto', torch.device('cuda')) > 1
    assert resolve_class_chunk(1, torch.device('cpu')) is None
    assert resolve_class_chunk(8, torch.device('cpu')) == 8


def _loader_and_model(root, tmp_path):
    cfg = tiny_config('crmt_avdigits.py', root, str(tmp_path))
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    torch.manual_seed(0)
    return loader, MODELS.build(cfg.model)


def test_estimate_tau_on_loader_matches_estimate_tau(avdigits_tiny,
                                                     tmp_path, capsys):
    loader, model = _loader_and_model(avdigits_tiny, tmp_path)
    model.train()
    model.encoders['audio'].eval()  # a mixed state that must survive
    flags = [m.training for m in model.modules()]
    logger = MMLogger.get_instance('tau_batched_test', log_level='INFO')
    out = estimate_tau_on_loader(model, loader, class_chunk=4, logger=logger)
    printed = capsys.readouterr().out
    assert [m.training for m in model.modules()] == flags
    assert out['num_samples'] == len(loader.dataset) == 30
    assert 'tau: [1/4]' in printed and 'ETA' in printed
    model.eval()
    direct = []
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        direct.append(model.split_inputs(data['inputs']))
    torch.testing.assert_close(out['tau'], tau_of(model, direct),
                               rtol=1e-6, atol=0)
    first = estimate_tau_on_loader(model, loader, max_batches=1)
    assert first['num_samples'] == loader.batch_size
    assert (first['tau'] <= out['tau']).all()
    with pytest.raises(ValueError, match='max_batches'):
        estimate_tau_on_loader(model, loader, max_batches=0)


def test_hook_with_tau_class_chunk_stores_the_loop_tau(avdigits_tiny,
                                                       tmp_path):
    # tau depends on the frozen encoders only, so after step 2 the stored
    # tau still equals a fresh per-class-loop estimate on the same data.
    cfg = tiny_config(
        'crmt_avdigits.py', avdigits_tiny, str(tmp_path),
        train_cfg=dict(max_epochs=2),
        custom_hooks=[dict(type='CRMTPhaseSwitchHook', switch_epoch=1,
                           lr_factor=0.3, tau_class_chunk=3)])
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    assert 'crmt_tau' not in runner.message_hub.runtime_info
    fresh = estimate_tau_on_loader(model, runner.train_dataloader)
    torch.testing.assert_close(model.tau, fresh['tau'], rtol=1e-6, atol=0)
