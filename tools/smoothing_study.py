"""Randomized-smoothing certificates on AV-Digits: JT vs CRMT, with and
without Gaussian noise augmentation of the audio during step 1.

Trains (or reuses) the four models

- ``jt``: ``configs/jt_avdigits.py``
- ``crmt``: ``configs/crmt_avdigits.py``
- ``jt_noise``: ``configs/jt_noise_avdigits.py`` (audio noise, sigma 0.5)
- ``crmt_noise``: ``configs/crmt_noise_avdigits.py``

then certifies each on a seeded subset of the test split with
``GaussianSmoothingCertifier`` on the audio at every ``--sigma`` (default
0.25 and the noise configs' training sigma 0.5) and writes
``smoothing_study.json`` and ``smoothing_study.md`` into ``--work-dir``:
certified accuracy at the given radii, the abstention rate and the clean
accuracy of the base model on the subset, per model and sigma.

Usage::

    python tools/smoothing_study.py --work-dir work_dirs/smoothing_study \
        [--stage train|certify|all] [--subset 100] [--n 1000]

``--stage train`` only trains (a model whose final checkpoint exists is
reused); ``certify`` needs the checkpoints.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import crmt_mm.compat  # noqa: E402,F401  (before Config.fromfile)
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from crmt_mm.utils import release_loader_workers  # noqa: E402

MODELS = (('jt', 'configs/jt_avdigits.py'),
          ('crmt', 'configs/crmt_avdigits.py'),
          ('jt_noise', 'configs/jt_noise_avdigits.py'),
          ('crmt_noise', 'configs/crmt_noise_avdigits.py'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/smoothing_study')
    parser.add_argument('--data-root', default='data/avdigits')
    parser.add_argument('--stage', choices=('train', 'certify', 'all'),
                        default='all')
    parser.add_argument('--models', nargs='+', default=[n for n, _ in MODELS])
    parser.add_argument('--seed', type=int, default=0,
                        help='training seed (and data seed)')
    parser.add_argument('--phase1-epochs', type=int, default=None,
                        help='shorten step 1 (default: the configs\' 20)')
    parser.add_argument('--phase2-epochs', type=int, default=None,
                        help='shorten step 2 of CRMT (default: 5)')
    parser.add_argument('--modality', default='audio')
    parser.add_argument('--sigma', type=float, nargs='+',
                        default=[0.25, 0.5],
                        help='smoothing noise std(s) on the modality')
    parser.add_argument('--n0', type=int, default=64)
    parser.add_argument('--n', type=int, default=1000)
    parser.add_argument('--alpha', type=float, default=0.001)
    parser.add_argument('--subset', type=int, default=100,
                        help='test clips certified (seeded choice)')
    parser.add_argument('--subset-seed', type=int, default=0)
    parser.add_argument('--radii', type=float, nargs='+',
                        default=[0.0, 0.25, 0.5, 1.0])
    return parser.parse_args(argv)


def config_of(name: str, args) -> Config:
    path = dict(MODELS)[name]
    cfg = Config.fromfile(osp.join(ROOT, path))
    for key, split in (('train_dataloader', 'train'),
                       ('val_dataloader', 'test'),
                       ('test_dataloader', 'test')):
        dataset = cfg[key]['dataset']
        dataset['ann_file'] = osp.join(args.data_root,
                                       f'avdigits_{split}.txt')
        dataset['data_prefix'] = dict(
            img=osp.join(args.data_root, 'rawframes', split),
            audio=osp.join(args.data_root, 'audio', split))
    phase1 = args.phase1_epochs or cfg.phase1_epochs
    switch = [h for h in cfg.custom_hooks
              if h['type'] == 'CRMTPhaseSwitchHook']
    for hook in switch:
        hook['switch_epoch'] = phase1
    cfg.train_cfg.max_epochs = phase1 + (
        (args.phase2_epochs or cfg.phase2_epochs) if switch else 0)
    cfg.work_dir = osp.join(args.work_dir, name)
    cfg.randomness = dict(seed=args.seed, deterministic=False)
    cfg.log_level = 'WARNING'
    return cfg


def checkpoint_of(cfg: Config) -> str:
    return osp.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')


def train(name: str, args) -> float:
    cfg = config_of(name, args)
    if osp.exists(checkpoint_of(cfg)):
        print(f'{name}: reusing {checkpoint_of(cfg)}', flush=True)
        return 0.0
    start = time.perf_counter()
    print(f'{name}: training {dict(MODELS)[name]}', flush=True)
    runner = Runner.from_cfg(cfg)
    runner.train()
    release_loader_workers(runner)
    seconds = time.perf_counter() - start
    print(f'{name}: trained in {seconds:.0f} s', flush=True)
    return seconds


def certify(name: str, args) -> dict:
    """Certify model ``name`` at every ``args.sigma`` in one pass over the
    test loader; returns ``{sigma: summary}``."""
    import numpy as np
    import torch
    from crmt_mm.certification.smoothing import (sample_indices,
                                                  smoothing_forward)
    from crmt_mm.evaluation.model_state import eval_mode
    from crmt_mm.evaluation.smoothing_eval import (SmoothingRun,
                                                   summarize_smoothing)

    cfg = config_of(name, args)
    cfg.load_from = checkpoint_of(cfg)
    cfg.test_cfg = dict(type='TestLoop')
    cfg.test_evaluator = dict(type='AccMetric')
    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(cfg.load_from)
    model = runner.model
    loader = runner.test_dataloader
    runs = [SmoothingRun(dict(
        type='GaussianSmoothingCertifier', modality=args.modality,
        sigma=sigma, n0=args.n0, n=args.n, alpha=args.alpha,
        subset=dict(size=args.subset, seed=args.subset_seed),
        radii=args.radii, check_attacks=False), [], model.modalities)
        for sigma in args.sigma]
    for run in runs:
        run.begin(len(loader.dataset))
    records = {run.name: [] for run in runs}
    seconds = {run.name: 0.0 for run in runs}
    forward = smoothing_forward(model)
    with eval_mode(model), torch.no_grad():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            idx = sample_indices(data['data_samples'])
            x, y, _ = model.batch_to_modalities(data, preprocessed=True)
            clean = model.fused_logits(x).argmax(1).tolist()
            for run in runs:
                start = time.perf_counter()
                results = run.process(forward, x, y, idx, [], None)
                seconds[run.name] += time.perf_counter() - start
                for label, c, result in zip(y.tolist(), clean, results):
                    if result is not None:
                        records[run.name].append(dict(
                            label=label, preds=dict(clean=c),
                            smoothing={run.name: result}))
    release_loader_workers(runner)
    out = {}
    for sigma, run in zip(args.sigma, runs):
        rows = records[run.name]
        summary = summarize_smoothing(rows, [run.describe()])[0]
        summary.pop('bracket')
        summary.update(
            model=name, config=dict(MODELS)[name], train_seed=args.seed,
            sigma=sigma, subset_size=len(rows), subset_seed=args.subset_seed,
            base_clean_accuracy_on_subset=float(np.mean(
                [r['preds']['clean'] == r['label'] for r in rows])),
            seconds=seconds[run.name],
            seconds_per_clip=seconds[run.name] / max(len(rows), 1))
        print(f'{name} sigma={sigma}: certified {len(rows)} clips in '
              f'{seconds[run.name]:.0f} s: {summary["certified"]} at '
              f'R={args.radii}, abstain {summary["abstention_rate"]:.3f}',
              flush=True)
        out[str(sigma)] = summary
    return out


def write(results: dict, args) -> None:
    # One file per set of models, so that models can be certified apart.
    stem = 'smoothing_study' if len(args.models) == len(MODELS) else \
        'smoothing_study_' + '_'.join(args.models)
    with open(osp.join(args.work_dir, f'{stem}.json'), 'w') as f:
        json.dump(results, f, indent=2)
    lines = ['| model | sigma | base clean (subset) | abstain | ' + ' | '.join(
        f'cert@{r:g}' for r in args.radii) + ' | s/clip |',
        '|---' * (len(args.radii) + 5) + '|']
    for name, by_sigma in results['models'].items():
        for sigma, s in by_sigma.items():
            lines.append(
                f'| {name} | {sigma} | '
                f'{s["base_clean_accuracy_on_subset"]:.3f} | '
                f'{s["abstention_rate"]:.3f} | ' + ' | '.join(
                    f'{v:.3f}' for v in s['certified']) +
                f' | {s["seconds_per_clip"]:.2f} |')
    text = '\n'.join(lines) + '\n'
    with open(osp.join(args.work_dir, f'{stem}.md'), 'w') as f:
        f.write(text)
    print(text)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    from crmt_mm.data_prep.avdigits import prepare_avdigits
    prepare_avdigits(args.data_root, seed=args.seed)
    if args.stage in ('train', 'all'):
        for name in args.models:
            train(name, args)
    if args.stage in ('certify', 'all'):
        results = dict(settings=dict(
            modality=args.modality, sigma=args.sigma, n0=args.n0, n=args.n,
            alpha=args.alpha, subset=args.subset,
            subset_seed=args.subset_seed, train_seed=args.seed,
            radii=args.radii), models={})
        for name in args.models:
            results['models'][name] = certify(name, args)
        write(results, args)


if __name__ == '__main__':
    main()
