"""Helpers shared by ``tools/train.py`` and ``tools/test.py``."""
import os
import os.path as osp
import shutil
import subprocess

import torch
import torch.distributed as dist


def use_cpu_distributed(cfg) -> None:
    """Make ``launcher='pytorch'`` and ``'slurm'`` work on CPU-only hosts
    with gloo.

    mmengine's ``_init_dist_pytorch`` and ``_init_dist_slurm`` call
    ``torch.cuda.set_device`` even for gloo and the default DDP wrapper
    passes ``device_ids=[LOCAL_RANK]``, both of which fail without CUDA.
    With CUDA present nothing changes (NCCL and mmengine's own
    initialisation are used). The process group is initialised here from
    the launcher's environment variables (see :func:`cpu_dist_env`);
    mmengine then skips its own ``init_dist``.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
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
        cpu_dist_env(launcher, cfg.env_cfg.dist_cfg.get('port'))
        dist.init_process_group('gloo')


def cpu_dist_env(launcher: str, port=None) -> None:
    """Check (pytorch) or derive (slurm) the variables of ``env://``.

    For slurm the derivation is mmengine's ``_init_dist_slurm``: RANK from
    ``SLURM_PROCID``, WORLD_SIZE from ``SLURM_NTASKS``, LOCAL_RANK from
    ``SLURM_LOCALID``, MASTER_ADDR (unless set) from the first host of
    ``scontrol show hostname $SLURM_NODELIST``, MASTER_PORT from
    ``dist_cfg.port``, the environment or 29500. Every error names the
    launcher that was asked for.
    """
    env = os.environ
    if launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR',
                               'MASTER_PORT') if k not in env]
        if missing:
            raise RuntimeError(
                "--launcher pytorch needs torchrun's environment variables "
                f'(missing {missing}); start with tools/dist_train.sh, '
                'tools/dist_test.sh or torchrun.')
        return
    if launcher != 'slurm':
        raise RuntimeError(
            f'--launcher {launcher} is not supported on a CPU-only host '
            '(mmengine initialises it through CUDA); use --launcher pytorch '
            '(tools/dist_train.sh) or --launcher slurm '
            '(tools/slurm_train.sh).')
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
               if k not in env]
    if missing:
        raise RuntimeError(
            f'--launcher slurm needs the variables srun sets (missing '
            f'{missing}); start with tools/slurm_train.sh, '
            'tools/slurm_test.sh or srun.')
    if 'MASTER_ADDR' not in env:
        if shutil.which('scontrol') is None:
            raise RuntimeError(
                '--launcher slurm: MASTER_ADDR is not set and scontrol, which '
                'names the first host of SLURM_NODELIST, is not on PATH; '
                'export MASTER_ADDR.')
        host = subprocess.run(
            ['scontrol', 'show', 'hostname', env['SLURM_NODELIST']],
            capture_output=True, text=True).stdout.split()
        if not host:
            raise RuntimeError(
                f'--launcher slurm: `scontrol show hostname '
                f'{env["SLURM_NODELIST"]}` named no host; export '
                'MASTER_ADDR.')
        env['MASTER_ADDR'] = host[0]
    if port is not None:
        env['MASTER_PORT'] = str(port)
    env.setdefault('MASTER_PORT', '29500')
    env['WORLD_SIZE'] = env['SLURM_NTASKS']
    env['RANK'] = env['SLURM_PROCID']
    env['LOCAL_RANK'] = env.get('SLURM_LOCALID', env['SLURM_PROCID'])


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


#: Config keys that name where an output is written.
OUTPUT_KEYS = ('report_dir', 'out_dir', 'save_dir', 'out_file_path')
#: The config sections that hold them: the robust loops (``report_dir``),
#: hooks (RobustEvalHook ``report_dir``, CheckpointHook and visualisation
#: ``out_dir``), the visualizer's backends (``save_dir``) and evaluators
#: (``DumpResults.out_file_path``).
OUTPUT_SECTIONS = ('train_cfg', 'val_cfg', 'test_cfg', 'default_hooks',
                   'custom_hooks', 'visualizer', 'vis_backends',
                   'val_evaluator', 'test_evaluator')


def set_launcher_and_work_dir(cfg, args) -> None:
    """Launcher from the command line; work dir: ``--work-dir`` > config >
    ``work_dirs/<config name>``.

    With ``--work-dir`` every output location the config file sets moves
    under it (see :func:`rebase_outputs`), so that testing the config a run
    dumped into its folder never writes into that folder. Call this before
    the command line adds output paths of its own (``--dump``,
    ``--show-dir``) and before ``--cfg-options``, which are kept as given.
    """
    cfg.launcher = args.launcher
    default = osp.join('./work_dirs',
                       osp.splitext(osp.basename(args.config))[0])
    if args.work_dir is not None:
        rebase_outputs(cfg, cfg.get('work_dir') or default, args.work_dir)
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default


def rebase_outputs(cfg, old: str, new: str) -> list:
    """Move every output path of ``cfg`` from work dir ``old`` to ``new``.

    The keys of :data:`OUTPUT_KEYS` anywhere in :data:`OUTPUT_SECTIONS`
    that are set (not None) move: a path inside ``old`` keeps its place
    relative to it, any other path (another run's folder, a shared one)
    becomes ``<new>/<its last component>``. Each move is logged.

    Args:
        cfg (Config): the config, changed in place.
        old (str): the config's own work dir.
        new (str): the work dir given on the command line.

    Returns:
        list[tuple[str, str, str]]: ``(config key, old path, new path)`` of
        every move.
    """
    from mmengine.logging import print_log
    moves = []

    def move(path: str) -> str:
        rel = osp.relpath(osp.abspath(path), osp.abspath(old))
        if rel == '.':
            return new
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return osp.join(new, osp.basename(osp.normpath(path)))
        return osp.join(new, rel)

    def walk(node, key: str) -> None:
        if isinstance(node, (list, tuple)):
            for index, item in enumerate(node):
                walk(item, f'{key}.{index}')
        elif isinstance(node, dict):
            for name, value in node.items():
                where = f'{key}.{name}'
                if name in OUTPUT_KEYS and isinstance(value, str):
                    node[name] = move(value)
                    moves.append((where, value, node[name]))
                else:
                    walk(value, where)

    for section in OUTPUT_SECTIONS:
        walk(cfg.get(section), section)
    for where, before, after in moves:
        print_log(f'--work-dir {new}: {where} {before} -> {after} (set it '
                  'with --cfg-options to write elsewhere)', logger='current')
    return moves
