"""Train a crmt_mm (or any mmaction2) model; flags mirror mmaction2's."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import crmt_mm.compat  # noqa: E402,F401  (before Config.fromfile)
from mmengine.config import Config, DictAction  # noqa: E402

from crmt_mm.engine.launch import (  # noqa: E402
    add_launcher_args, build_runner, parse_launcher_args,
    set_launcher_and_work_dir)
from crmt_mm.engine.teardown import end_run, exit_process  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a recognizer')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='dir to save logs and models; '
                        'output paths the config sets (report_dir, out_dir, '
                        '...) move under it')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a value from the '
        'latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (GPU only)')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale lr by actual / base batch size')
    parser.add_argument('--seed', type=int, default=None, help='random seed')
    parser.add_argument('--diff-rank-seed', action='store_true',
                        help='different seeds for different ranks')
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic options for CUDNN')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value (e.g. '
        'train_cfg.max_epochs=3)')
    add_launcher_args(parser)
    return parse_launcher_args(parser, argv)


def merge_args(cfg, args):
    """Merge the command line into the config (as mmaction2 does)."""
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    set_launcher_and_work_dir(cfg, args)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(f'--amp does not support optim_wrapper type '
                             f'{wrapper!r}; use OptimWrapper.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    merge_randomness(cfg, args)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def merge_randomness(cfg, args) -> None:
    """``--seed``, ``--deterministic`` and ``--diff-rank-seed`` override the
    config's ``randomness`` when given (mmaction2's tool ignores them once
    the config sets ``randomness``); the rest of it is kept."""
    randomness = dict(cfg.get('randomness') or {})
    if args.seed is not None:
        randomness['seed'] = args.seed
    if args.deterministic:
        randomness['deterministic'] = True
    if args.diff_rank_seed:
        randomness['diff_rank_seed'] = True
    randomness.setdefault('seed', None)
    cfg.randomness = randomness


def main(argv=None):
    args = parse_args(argv)
    cfg = merge_args(Config.fromfile(args.config), args)
    runner = build_runner(cfg)
    used = cfg.randomness
    runner.logger.info(
        f'randomness: seed={runner.seed} (requested {used.get("seed")}), '
        f'deterministic={used.get("deterministic", False)}, '
        f'diff_rank_seed={used.get("diff_rank_seed", False)}')
    runner.train()
    end_run(runner)


if __name__ == '__main__':
    main()
    exit_process()
