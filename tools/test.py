"""Test (and robustly evaluate) a checkpoint; flags mirror mmaction2's."""
import argparse
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import crmt_mm.compat  # noqa: E402,F401  (before Config.fromfile)
from mmengine.config import Config, DictAction  # noqa: E402

from crmt_mm.engine.launch import (  # noqa: E402
    add_launcher_args, build_runner, parse_launcher_args,
    set_launcher_and_work_dir)
from crmt_mm.engine.teardown import end_run, exit_process  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test a recognizer (robust evaluation with '
        "test_cfg=dict(type='RobustTestLoop', ...))")
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (trusted: it is '
                        'fully unpickled)')
    parser.add_argument(
        '--work-dir',
        help='dir for logs, metrics and the robustness report; output paths '
        'the config sets (report_dir, out_dir, ...) move under it')
    parser.add_argument(
        '--dump', type=str,
        help='dump predictions (and robust records) to a .pkl file')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value (e.g. '
        'test_dataloader.batch_size=16)')
    parser.add_argument('--show-dir',
                        help='where visualisations go (multi-modal models: '
                        'one image per sample; others need a '
                        'VisualizationHook in default_hooks)')
    parser.add_argument('--show', action='store_true',
                        help='show predictions in a window (needs a '
                        'VisualizationHook in default_hooks)')
    parser.add_argument('--interval', type=int, default=1,
                        help='visualise every this many samples')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='display time of every window (s)')
    add_launcher_args(parser)
    return parse_launcher_args(parser, argv)


def is_multimodal(cfg) -> bool:
    """Whether ``cfg.model`` takes a dict of modality tensors."""
    model = cfg.get('model') or {}
    pre = model.get('data_preprocessor') or {}
    return model.get('type') == 'CRMTRecognizer' or \
        pre.get('type') == 'MultiModalDataPreprocessor'


def show_predictions(cfg, args) -> None:
    """``--show``/``--show-dir``: mmaction2's VisualizationHook for single
    inputs; for multi-modal models (whose dict of inputs that hook cannot
    draw) MultiModalVisualizationHook writes images, and --show is refused
    before anything runs."""
    hooks = cfg.setdefault('default_hooks', {})
    if is_multimodal(cfg):
        if args.show:
            raise SystemExit(
                '--show: a multi-modal model has no single video to show in '
                'a window; use --show-dir DIR to write one image per sample '
                '(frames and spectrogram with the predictions).')
        hooks['visualization'] = dict(type='MultiModalVisualizationHook',
                                      out_dir=args.show_dir,
                                      interval=args.interval)
    elif 'visualization' in hooks:
        hooks['visualization'].update(
            enable=True, show=args.show, wait_time=args.wait_time,
            out_dir=args.show_dir, interval=args.interval)
    else:
        warnings.warn('--show/--show-dir ignored: the config has no '
                      'default_hooks.visualization', stacklevel=3)


def merge_args(cfg, args):
    """Merge the command line into the config (as mmaction2 does).

    The work dir first: ``--work-dir`` moves the config's output paths
    under it, but not those the command line sets (``--dump``,
    ``--show-dir``, ``--cfg-options``)."""
    set_launcher_and_work_dir(cfg, args)
    if args.show or args.show_dir is not None:
        show_predictions(cfg, args)
    if args.dump is not None:
        if not args.dump.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--dump must name a .pkl file, got {args.dump}')
        dump = dict(type='DumpResults', out_file_path=args.dump)
        evaluator = cfg.test_evaluator
        cfg.test_evaluator = list(evaluator) + [dump] \
            if isinstance(evaluator, (list, tuple)) else [evaluator, dump]
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.load_from = args.checkpoint
    add_progress_hook(cfg)
    return cfg


def add_progress_hook(cfg):
    """Batches done and ETA of the test pass (mmengine's LoggerHook prints
    nothing before its interval); the robust loops print their own."""
    loop = str((cfg.get('test_cfg') or {}).get('type', ''))
    hooks = list(cfg.get('custom_hooks') or [])
    if loop.startswith('Robust') or any(
            h.get('type') == 'EvalProgressHook' for h in hooks):
        return
    cfg.custom_hooks = hooks + [dict(type='EvalProgressHook')]


def main(argv=None):
    args = parse_args(argv)
    cfg = merge_args(Config.fromfile(args.config), args)
    runner = build_runner(cfg)
    metrics = runner.test()
    end_run(runner)
    return metrics


if __name__ == '__main__':
    main()
    exit_process()
