"""Helpers shared by ``tools/train.py`` and ``tools/test.py``."""
import os
import os.path as osp

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


def add_launcher_args(parser) -> None:
    """``--launcher`` and ``--local-rank``, as in mmaction2's tools."""
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launcher_args(parser, argv=None):
    """Parse ``argv``; export ``LOCAL_RANK`` for launchers that pass
    ``--local-rank`` (torch.distributed.launch) instead of setting it."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def set_launcher_and_work_dir(cfg, args) -> None:
    """Launcher from the command line; work dir: ``--work-dir`` > config >
    ``work_dirs/<config name>``."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
