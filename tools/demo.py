"""The main job: JT vs CRMT on the embedded AV-Digits dataset.

Generates AV-Digits (cached), trains the joint-training baseline
(``configs/jt_avdigits.py``) and CRMT (``configs/crmt_avdigits.py``, step 1
then step 2) through the mmengine Runner, evaluates both with
``RobustTestLoop`` and writes into ``--work-dir``:

- ``report.json``: keys ``jt`` and ``crmt``, each with ``clean``,
  ``missing_audio``, ``missing_visual``, ``pgd_audio``, ``pgd_visual`` (at
  the demo budget, see below) and more, accuracies in [0, 1];
- ``report.md`` and ``robustness.png`` (accuracy vs L2 budget per modality,
  one colour per model), plus each run's own folder with its checkpoints,
  logs and ``robustness.json``.

The demo budget is the smallest budget of the sweep at which JT keeps at
most half of its clean accuracy under the uni-modal PGD attack on its
preferred modality (the one whose absence costs JT most).
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

from crmt_mm.data_prep.avdigits import prepare_avdigits  # noqa: E402
from crmt_mm.evaluation.report import compare_reports  # noqa: E402

MODELS = (('jt', 'configs/jt_avdigits.py'),
          ('crmt', 'configs/crmt_avdigits.py'))
MODALITIES = ('audio', 'visual')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/avdigits',
                        help='where AV-Digits is generated (cached)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the data and of training')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='key=value overrides applied to both configs, '
                        'e.g. train_cfg.max_epochs=5')
    return parser.parse_args(argv)


def point_to(cfg: Config, data_root: str) -> None:
    """Use ``data_root`` for every AV-Digits dataloader of ``cfg``."""
    for key, split in (('train_dataloader', 'train'),
                       ('val_dataloader', 'test'),
                       ('test_dataloader', 'test')):
        dataset = cfg[key]['dataset']
        dataset['ann_file'] = osp.join(data_root, f'avdigits_{split}.txt')
        dataset['data_prefix'] = dict(
            img=osp.join(data_root, 'rawframes', split),
            audio=osp.join(data_root, 'audio', split))


def parse_options(pairs):
    from mmengine.config import DictAction
    options = {}
    for pair in pairs:
        key, value = pair.split('=', 1)
        options[key] = DictAction._parse_iterable(value)
    return options


def train_and_test(name: str, config: str, args) -> dict:
    cfg = Config.fromfile(osp.join(ROOT, config))
    point_to(cfg, args.data_root)
    cfg.work_dir = osp.join(args.work_dir, name)
    cfg.randomness = dict(seed=args.seed, deterministic=False)
    cfg.test_cfg.report_dir = cfg.work_dir
    cfg.merge_from_dict(parse_options(args.cfg_options))
    print(f'\n=== {name}: training {config} (logs in {cfg.work_dir}) ===',
          flush=True)
    runner = Runner.from_cfg(cfg)
    runner.train()
    print(f'=== {name}: robustness evaluation ===', flush=True)
    metrics = runner.test()
    with open(osp.join(cfg.work_dir, 'robustness.json')) as f:
        report = json.load(f)
    report['metrics'].update(metrics)  # AccMetric's per-modality accuracy
    return report


def metric(report: dict, key: str):
    return report['metrics'].get(f'robust/{key}')


def budgets(report: dict, modality: str):
    prefix = f'pgd_{modality}@'
    return sorted(float(k.split('@')[1]) for k in report['metrics']
                  if k.startswith('robust/' + prefix))


def choose_budget(jt: dict):
    """Preferred modality of JT and the first budget halving its accuracy."""
    clean = metric(jt, 'clean')
    preferred = min(MODALITIES, key=lambda m: metric(jt, f'missing_{m}'))
    for eps in budgets(jt, preferred):
        if metric(jt, f'pgd_{preferred}@{eps}') <= clean / 2:
            return preferred, eps
    return preferred, budgets(jt, preferred)[-1]


def summary(report: dict, eps: float) -> dict:
    out = dict(clean=metric(report, 'clean'))
    for m in MODALITIES:
        out[f'acc_{m}_only'] = report['metrics'].get(f'acc/{m}_top1')
        out[f'missing_{m}'] = metric(report, f'missing_{m}')
        out[f'missing_{m}_feat'] = metric(report, f'missing_{m}_feat')
        out[f'pgd_{m}'] = metric(report, f'pgd_{m}@{eps}')
        out[f'fgm_{m}'] = metric(report, f'fgm_{m}@{eps}')
        out[f'certified_{m}'] = metric(report, f'certified_{m}@{eps}')
    out['pgd_joint@1.0'] = metric(report, 'pgd_joint@1.0')
    out['certified@1.0'] = metric(report, 'certified@1.0')
    out['budget'] = eps
    return out


def print_table(rows: dict, eps: float) -> str:
    keys = list(next(iter(rows.values())))
    keys.remove('budget')
    lines = [f'| metric (L2 budget {eps}) | ' + ' | '.join(rows) + ' |',
             '|---' * (len(rows) + 1) + '|']
    for key in keys:
        cells = ['-' if rows[r][key] is None else f'{rows[r][key]:.3f}'
                 for r in rows]
        lines.append(f'| {key} | ' + ' | '.join(cells) + ' |')
    table = '\n'.join(lines)
    print(table)
    return table


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    os.makedirs(args.work_dir, exist_ok=True)
    print(f'Preparing AV-Digits in {args.data_root} ...', flush=True)
    prepare_avdigits(args.data_root, seed=args.seed)
    reports = {name: train_and_test(name, config, args)
               for name, config in MODELS}
    preferred, eps = choose_budget(reports['jt'])
    rows = {name: summary(r, eps) for name, r in reports.items()}
    jt, crmt = rows['jt'], rows['crmt']
    checks = dict(
        preferred_modality=preferred,
        jt_keeps_at_most_half=jt[f'pgd_{preferred}'] <= jt['clean'] / 2,
        crmt_clean_within_2_points=crmt['clean'] >= jt['clean'] - 0.02,
        crmt_at_least_10_points_more_under_attack=(
            crmt[f'pgd_{preferred}'] >= jt[f'pgd_{preferred}'] + 0.10))
    result = dict(rows, budget=eps, checks=checks,
                  seconds=round(time.perf_counter() - start, 1),
                  note='accuracies in [0, 1] on the 539 AV-Digits test clips; '
                  'budgets are per-sample L2 norms in the normalised input '
                  'space; certified accuracies are empirical (estimated tau)')
    with open(osp.join(args.work_dir, 'report.json'), 'w') as f:
        json.dump(result, f, indent=2)
    print('\n=== JT vs CRMT on AV-Digits ===')
    table = print_table(rows, eps)
    compare_reports([osp.join(args.work_dir, n, 'robustness.json')
                     for n, _ in MODELS], ['JT', 'CRMT'], args.work_dir,
                    stem='robustness')
    with open(osp.join(args.work_dir, 'report.md'), 'w') as f:
        f.write(table + '\n\nChecks: ' + json.dumps(checks) + '\n')
    print(f'\nChecks: {json.dumps(checks)}')
    print(f'Wrote {args.work_dir}/report.json, report.md, robustness.png '
          f'in {result["seconds"]:.0f} s')


if __name__ == '__main__':
    main()
