"""Shared pieces of the randomized-smoothing tests: linear models with a
closed-form smoothed classifier, and the DDP worker."""
import os.path as osp

import numpy as np
import torch
from scipy import stats
from torch import nn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class LinearFusion(nn.Module):
    """``h(x) = sum_m x_m W_m^T + b`` over flattened modality inputs.

    The forward convention of the crmt_mm recognizers
    (``fused_logits(x, drop=()) -> [B, K]``), with a smoothed classifier
    known in closed form: with two classes and Gaussian noise of std
    ``sigma_m`` on modality m, ``P(f(x + delta) = 0) = Phi(margin / s)``
    with ``margin = h_0 - h_1`` and ``s^2 = sum_m sigma_m^2 ||w_m||^2``,
    ``w_m`` the difference of the two rows of ``W_m``.
    """

    def __init__(self, dims, num_classes=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.modalities = tuple(dims)
        self.weights = nn.ParameterDict({
            m: nn.Parameter(torch.randn(num_classes, d, generator=g,
                                        dtype=torch.float64))
            for m, d in dims.items()})
        self.bias = nn.Parameter(torch.randn(num_classes, generator=g,
                                             dtype=torch.float64))
        self.eval()

    def fused_logits(self, x, drop=()):
        return sum(x[m].flatten(1) @ self.weights[m].T
                   for m in self.modalities if m not in drop) + self.bias

    # ---- closed forms for two classes ---------------------------------
    def diff(self, m):
        """``w_m = W_m[0] - W_m[1]`` as a numpy vector."""
        w = self.weights[m].detach()
        return (w[0] - w[1]).numpy()

    def margin(self, x):
        """``h_0 - h_1`` per sample, numpy [B]."""
        h = self.fused_logits(x).detach()
        return (h[:, 0] - h[:, 1]).numpy()

    def smoothed(self, x, sigmas):
        """Exact smoothed class and its probability for noise std
        ``sigmas = {m: sigma_m}`` (absent modalities stay clean)."""
        scale = np.sqrt(sum(s ** 2 * np.sum(self.diff(m) ** 2)
                            for m, s in sigmas.items()))
        margin = self.margin(x)
        return (margin < 0).astype(np.int64), \
            stats.norm.cdf(np.abs(margin) / scale)


def linear_inputs(dims, batch, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {m: scale * torch.randn(batch, d, generator=g,
                                   dtype=torch.float64)
            for m, d in dims.items()}


def certificate_tuple(cert):
    """Every field of a Certificate as a comparable tuple of lists."""
    return (cert.prediction.tolist(), cert.radius.tolist(),
            {m: v.tolist() for m, v in cert.modality_radii.items()},
            cert.p_lower.tolist(), cert.selected.tolist(),
            cert.count.tolist(), cert.counts.tolist(), cert.n)


def build_avdigits_model():
    """The AV-Digits CRMT recognizer with seeded initial weights, eval."""
    import crmt_mm  # noqa: F401
    from mmaction.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmaction')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'models',
                                   'crmt_avdigits.py'))
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def avdigits_inputs(model, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn((batch, 1) + e.input_shape, generator=g)
            for m, e in model.encoders.items()}


def ddp_worker(rank, world_size, port, settings, indices, out_path):
    """Certify this rank's shard of ``indices`` (rank::world_size) on the
    AV-Digits model over gloo, gather, and let rank 0 save the results."""
    import torch.distributed as dist
    from crmt_mm.certification import GaussianSmoothingCertifier
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world_size)
    try:
        model = build_avdigits_model()
        x = avdigits_inputs(model, len(indices))
        certifier = GaussianSmoothingCertifier(**settings)
        mine = list(range(rank, len(indices), world_size))
        shard = {m: v[mine] for m, v in x.items()}
        cert = certifier.certify(model.fused_logits, shard,
                                 [indices[i] for i in mine])
        gathered = [None] * world_size
        dist.all_gather_object(gathered, (mine, cert.records()))
        if rank == 0:
            by_position = {}
            for positions, records in gathered:
                by_position.update(zip(positions, records))
            torch.save([by_position[i] for i in range(len(indices))],
                       out_path)
    finally:
        dist.destroy_process_group()
