"""Helpers shared by ``tools/train.py`` and ``tools/test.py``."""
import os

import torch
import torch.distributed as dist


def use_cpu_distributed(cfg) -> None:
    """Make ``launcher='pytorch'`` work on CPU-only hosts with gloo.

    mmengine's ``_init_dist_pytorch`` calls ``torch.cuda.set_device`` even
    for gloo and the default DDP wrapper passes ``device_ids=[LOCAL_RANK]``,
    both of which fail without CUDA. With CUDA present nothing changes (NCCL
    and mmengine's own initialisation are used). The process group is
    initialised here from torchrun's environment variables; mmengine then
    skips its own ``init_dist``.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    wrapper = dict(type='MMDistributedDataParallel', device_ids=None,
                   find_unused_parameters=cfg.get('find_unused_parameters',
                                                  False))
    wrapper.update(cfg.get('model_wrapper_cfg') or {})
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    if not dist.is_initialized():
        if 'RANK' not in os.environ:
            raise RuntimeError(
                "--launcher pytorch needs torchrun's environment (RANK, "
                'WORLD_SIZE, MASTER_ADDR, MASTER_PORT); start with '
                'tools/dist_train.sh or torchrun.')
        dist.init_process_group('gloo')


def build_runner(cfg):
    """The runner of ``cfg`` (``runner_type`` if set), after the CPU DDP
    set-up of :func:`use_cpu_distributed`."""
    use_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        from mmaction.registry import RUNNERS
        return RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)
