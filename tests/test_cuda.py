"""What only a GPU can show: tau, attacks and training steps on CUDA.

Skipped on machines without CUDA; ``tools/gpu_check.sh`` runs them.
"""
import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from crmt_mm.attacks import UniModalPGD
from crmt_mm.certification import estimate_tau, estimate_tau_on_loader
from helpers import config_path, tiny_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason='needs a CUDA GPU (torch.cuda.is_available() '
                       'is False)'),
]

init_default_scope('mmaction')
CUDA = torch.device('cuda')


def build(config, **encoder_shapes):
    cfg = Config.fromfile(config_path(config)).model
    for name, shape in encoder_shapes.items():
        cfg.encoders[name].input_shape = shape
    torch.manual_seed(0)
    return MODELS.build(cfg)


def batch(model, size, device=CUDA, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn((size, 1) + e.input_shape, generator=g)
         for m, e in model.encoders.items()}
    y = torch.randint(0, model.num_classes, (size, ), generator=g)
    return {m: v.to(device) for m, v in x.items()}, y.to(device)


@pytest.mark.parametrize('chunk', [4, 'auto'])
def test_tau_batched_equals_loop_on_cuda(chunk):
    model = build('_base_/models/crmt_resnet18_av.py',
                  visual=(3, 2, 64, 64), audio=(1, 128, 64)).eval()
    cpu_x, _ = batch(model, 4, torch.device('cpu'))
    cpu = estimate_tau(model.modality_logits, [cpu_x], model.modalities,
                       model.num_classes)['tau']
    model.to(CUDA)
    x = {m: v.to(CUDA) for m, v in cpu_x.items()}
    loop = estimate_tau(model.modality_logits, [x], model.modalities,
                        model.num_classes)['tau']
    batched = estimate_tau(model.modality_logits, [x], model.modalities,
                           model.num_classes, class_chunk=chunk)['tau']
    assert batched.device.type == 'cuda'
    torch.testing.assert_close(batched, loop, rtol=1e-5, atol=0)
    # cuDNN and MKL-DNN sum in different orders: equal to float32 rounding.
    torch.testing.assert_close(loop.cpu(), cpu, rtol=1e-3, atol=1e-7)


def test_tau_on_loader_on_cuda(avdigits_tiny, tmp_path):
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path))
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(CUDA)
    out = estimate_tau_on_loader(model, loader, class_chunk='auto')
    assert out['tau'].device.type == 'cuda'
    assert out['num_samples'] == 30 and bool((out['tau'] > 0).all())
    loop = estimate_tau_on_loader(model, loader)
    torch.testing.assert_close(out['tau'], loop['tau'], rtol=1e-5, atol=0)


def test_pgd_on_cuda_stays_in_budget():
    model = build('_base_/models/crmt_avdigits.py').to(CUDA).eval()
    x, y = batch(model, 8)
    attack = UniModalPGD('audio', eps=1.0, steps=4)
    adv = attack.perturb(model.fused_logits, x, y)
    delta = (adv['audio'] - x['audio']).flatten(1).norm(dim=1)
    assert adv['audio'].device.type == 'cuda'
    assert bool((delta <= 1.0 + 1e-4).all())
    assert torch.equal(adv['visual'], x['visual'])
    with torch.no_grad():
        clean = model.fused_logits(x).gather(1, y[:, None])
        attacked = model.fused_logits(adv).gather(1, y[:, None])
    assert bool((attacked <= clean + 1e-4).all())


@pytest.mark.parametrize('amp', [False, True])
def test_training_step_on_cuda(amp):
    model = build('_base_/models/crmt_resnet18_av.py',
                  visual=(3, 2, 64, 64), audio=(1, 128, 64)).to(CUDA)
    model.train()
    x, y = batch(model, 4)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
        losses = model._phase1_loss(x, y)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert bool(torch.isfinite(loss))
    loss.backward()
    opt.step()
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all())
               for p in model.parameters())
