"""The main job: JT vs CRMT on the embedded AV-Digits dataset.

Generates AV-Digits (cached), trains the joint-training baseline
(``configs/jt_avdigits.py``) and CRMT (``configs/crmt_avdigits.py``, step 1
then step 2) through the mmengine Runner, evaluates both with
``RobustTestLoop`` and writes into ``--work-dir``:

- ``report.json``: keys ``jt`` and ``crmt``, each with ``clean``,
  ``missing_audio``, ``missing_visual``, ``strong_audio``/``strong_visual``
  (the strong ensemble's per-sample worst case at the demo budget),
  ``pgd_audio``/``pgd_visual`` (the reference 4-step PGD) and more,
  accuracies in [0, 1]; ``protocol`` (what was run, on how many clips) and
  ``trust`` (each run's trust checks);
- ``report.md`` and ``robustness.png`` (accuracy vs L2 budget per modality,
  one colour per model), plus each run's own folder with its checkpoints,
  logs and ``robustness.json``.

The demo budget is the smallest budget of the sweep at which JT keeps at
most half of its clean accuracy under the strong ensemble on its preferred
modality (the one whose absence costs JT most). With ``--seeds 0 1 2``
every seed gets its own ``seed_<s>`` folder, ``report.json`` gains mean,
min and max per metric over the seeds at one common budget (the largest
per-seed demo budget, where every seed's JT is at most at half) and a
paired bootstrap 95 % interval of CRMT - JT (over test clips and seeds), and
the checks are stated per seed. A finished training whose dumped config
equals the current one is reused (an interrupted run resumes); a finished
training with a different config is refused, never silently reused.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import crmt_mm.compat  # noqa: E402,F401  (before Config.fromfile)
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from crmt_mm.data_prep.avdigits import prepare_avdigits  # noqa: E402
from crmt_mm.evaluation.report import compare_reports  # noqa: E402
from crmt_mm.evaluation.statistics import paired_bootstrap  # noqa: E402
from crmt_mm.utils import release_loader_workers  # noqa: E402

MODELS = (('jt', 'configs/jt_avdigits.py'),
          ('crmt', 'configs/crmt_avdigits.py'))
MODALITIES = ('audio', 'visual')
#: The demo's strong-ensemble settings: a REDUCED 'fast' ensemble (APGD-CE
#: and APGD-T over 3 targets with 10 steps each, Square with 100 queries) on
#: a seeded subsample of about 32 test clips, chosen so that ``make demo``
#: fits 10 minutes on 2 CPU cores: the measured cost of 'standard' or even
#: 'fast' on every clip is far beyond it (docs/evaluation.md, "The demo").
#: ``scope='attacks'``: the reference PGD/FGM attack the same clips, so the
#: two protocols are compared clip by clip; clean accuracy, missing
#: modality, noise and the certificates see all 539 test clips.
STRONG_VERSION = 'fast'
STRONG_OVERRIDES = dict(steps=10, n_targets=3, queries=100)
STRONG_SUBSET = dict(size=32, seed=0, scope='attacks')
#: The demo's L2 budgets (the evaluation config sweeps 0.5, 1, 2 and 4 and
#: attacks jointly at 1 and 2). The reference attacks (cheap on the
#: subsample) run at 1, 2 and 4 per modality and at 1 jointly. The strong
#: ensemble sweeps 1, 2 and 4 on audio, the modality JT prefers on AV-Digits
#: (its sweep picks the demo budget), and runs at 4 alone on visual, the
#: demo budget in every measured seed; the strong joint attack is left to
#: the full configs. Each cut is measured in docs/evaluation.md ("The demo").
DEMO_BUDGETS = dict(modality=[1.0, 2.0, 4.0], joint=[1.0])
STRONG_BUDGETS = dict(audio=[1.0, 2.0, 4.0], visual=[4.0], joint=None)
#: Test clips of the demo's randomized-smoothing certificates (the config's
#: 16 cost about a quarter of the demo's evaluation time), and the radii of
#: its certified-accuracy table: at sigma = 0.25 and n = 512 no radius can
#: exceed 0.55, so the attack budgets alone would only show zeros.
SMOOTHING_SUBSET = 8
SMOOTHING_RADII = [0.0, 0.25, 0.5]
#: Written next to a finished training: the config it was trained with.
STAMP = 'demo_trained.json'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/avdigits',
                        help='where AV-Digits is generated (cached)')
    parser.add_argument('--seed', type=int, default=None,
                        help='seed of the data and of training (one run; '
                        'default 0)')
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='several training seeds, e.g. 0 1 2: one work '
                        'dir per seed, mean/min/max and a paired bootstrap '
                        'interval of CRMT - JT (the data stays seed 0)')
    parser.add_argument('--strong-version', default=STRONG_VERSION,
                        choices=('standard', 'fast'),
                        help='version of the strong ensemble (default: '
                        f'{STRONG_VERSION!r}, to fit the time budget)')
    parser.add_argument('--strong-steps', type=int,
                        default=STRONG_OVERRIDES['steps'],
                        help='APGD steps of the strong ensemble; 0 = the '
                        "version's own (100 'standard', 50 'fast')")
    parser.add_argument('--strong-targets', type=int,
                        default=STRONG_OVERRIDES['n_targets'],
                        help="APGD-T targets; 0 = the version's own")
    parser.add_argument('--strong-queries', type=int,
                        default=STRONG_OVERRIDES['queries'],
                        help="Square queries; 0 = the version's own")
    parser.add_argument('--strong-subset', type=int,
                        default=STRONG_SUBSET['size'],
                        help='clips (about, seeded) the strong ensemble '
                        'attacks; 0 = every test clip (default '
                        f'{STRONG_SUBSET["size"]})')
    parser.add_argument('--train-only', action='store_true',
                        help='train (or reuse) every model and stop; a later '
                        'run without it evaluates the finished trainings')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='key=value overrides applied to both configs, '
                        'e.g. train_cfg.max_epochs=5')
    args = parser.parse_args(argv)
    if args.seed is not None and args.seeds is not None:
        parser.error('give --seed or --seeds, not both')
    if args.seeds is None:
        args.seeds = [0 if args.seed is None else args.seed]
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must be distinct, got {args.seeds}')
    return args


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


def configure(config: str, work_dir: str, seed: int, args) -> Config:
    """The demo's config of one run (data, seed, strong-ensemble knobs)."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    point_to(cfg, args.data_root)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.test_cfg.report_dir = cfg.work_dir
    for p in cfg.test_cfg.perturbations:
        if p['type'] == 'MultiModalAutoAttack' and \
                p.get('version') != 'reference':
            p['version'] = args.strong_version
            for key, value in (('steps', args.strong_steps),
                               ('n_targets', args.strong_targets),
                               ('queries', args.strong_queries)):
                if value:
                    p[key] = value
    kept = []
    for p in cfg.test_cfg.perturbations:
        if isinstance(p.get('eps'), (list, tuple)):
            where = p.get('modality') or 'joint'
            if p['type'] == 'MultiModalAutoAttack' and \
                    p.get('version') != 'reference':
                p['eps'] = STRONG_BUDGETS[where]
            else:
                p['eps'] = DEMO_BUDGETS[
                    'joint' if where == 'joint' else 'modality']
        if p.get('eps', ()) is not None:
            kept.append(p)
    cfg.test_cfg.perturbations = kept
    for entry in cfg.test_cfg.get('smoothing') or []:
        entry['subset'] = dict(entry.get('subset') or {},
                               size=SMOOTHING_SUBSET)
        entry['radii'] = SMOOTHING_RADII
    cfg.test_cfg.subset = None if args.strong_subset == 0 else dict(
        STRONG_SUBSET, size=args.strong_subset)
    cfg.merge_from_dict(parse_options(args.cfg_options))
    return cfg


#: Config keys that only concern evaluation: a finished training stays valid
#: when they change (a re-run then only re-evaluates). Validation keys are
#: among them because the demo selects no checkpoint by validation
#: (no ``save_best``), so they cannot change the trained weights.
EVALUATION_KEYS = ('test_cfg', 'test_evaluator', 'test_dataloader',
                   'test_pipeline', 'val_cfg', 'val_evaluator',
                   'val_dataloader')


def training_text(cfg: Config) -> str:
    """The config text that determines the trained weights (everything but
    the evaluation keys)."""
    return Config({k: v for k, v in cfg.to_dict().items()
                   if k not in EVALUATION_KEYS}).pretty_text


def finished_checkpoint(cfg: Config):
    """The final checkpoint of a finished training of exactly ``cfg``'s
    training part (:func:`training_text`).

    Returns None when there is no finished training in ``cfg.work_dir``.

    Raises:
        RuntimeError: the work dir holds a finished training of another
            config (it is never silently reused).
    """
    stamp = osp.join(cfg.work_dir, STAMP)
    if not osp.exists(stamp):
        return None
    with open(stamp) as f:
        done = json.load(f)
    if done['config'] != training_text(cfg):
        raise RuntimeError(
            f'{cfg.work_dir} holds a finished training of another config '
            f'({stamp} differs from the current one); use another '
            '--work-dir or delete that folder')
    if not osp.exists(done['checkpoint']):
        return None
    return done['checkpoint']


def train(name: str, cfg: Config, seed: int):
    """Train ``cfg`` unless a finished training of it exists.

    Returns:
        tuple: (a runner built from ``cfg`` with the trained weights, the
        final checkpoint path).
    """
    checkpoint = finished_checkpoint(cfg)
    if checkpoint is not None:
        print(f'\n=== {name} (seed {seed}): reusing the finished training '
              f'{checkpoint} ===', flush=True)
        runner = Runner.from_cfg(cfg.copy())
        runner.load_checkpoint(checkpoint)
        return runner, checkpoint
    print(f'\n=== {name} (seed {seed}): training (logs in {cfg.work_dir}) '
          '===', flush=True)
    runner = Runner.from_cfg(cfg)
    runner.train()
    last = osp.join(cfg.work_dir, 'last_checkpoint')
    if osp.exists(last):
        with open(last) as f:
            checkpoint = f.read().strip()
    else:
        checkpoint = osp.join(cfg.work_dir, 'demo_final.pth')
        runner.save_checkpoint(cfg.work_dir, 'demo_final.pth')
    with open(osp.join(cfg.work_dir, STAMP), 'w') as f:
        json.dump(dict(config=training_text(cfg), checkpoint=checkpoint), f)
    return runner, checkpoint


def train_and_test(name: str, config: str, work_dir: str, seed: int,
                   args) -> Optional[dict]:
    """Train (or reuse) and evaluate one model; None with ``--train-only``.
    """
    cfg = configure(config, osp.join(work_dir, name), seed, args)
    runner, _ = train(name, cfg, seed)
    if args.train_only:
        release_loader_workers(runner)
        return None
    print(f'=== {name} (seed {seed}): robustness evaluation ===', flush=True)
    metrics = runner.test()
    with open(osp.join(cfg.work_dir, 'robustness.json')) as f:
        report = json.load(f)
    report['metrics'].update(metrics)  # AccMetric's per-modality accuracy
    report['records'] = runner.test_loop.metric.records
    release_loader_workers(runner)
    return report


def metric(report: dict, key: str):
    return report['metrics'].get(f'robust/{key}')


def strong(report: dict, modality: str, eps: float) -> str:
    """Metric name of the strong ensemble on ``modality`` at ``eps``."""
    kind = next(p['kind'] for p in report['perturbations']
                if p['type'] == 'MultiModalAutoAttack'
                and p['kind'] != 'aa-reference')
    return f'{kind}_{modality}@{float(eps)!r}'


def budgets(report: dict, modality: str):
    prefix = strong(report, modality, 0).split('@')[0] + '@'
    return sorted(float(k.split('@')[1]) for k in report['metrics']
                  if k.startswith('robust/' + prefix))


def choose_budget(jt: dict):
    """Preferred modality of JT and the first budget at which the strong
    worst case halves its clean accuracy (the largest one if none)."""
    clean = metric(jt, 'clean')
    preferred = min(MODALITIES, key=lambda m: metric(jt, f'missing_{m}'))
    for eps in budgets(jt, preferred):
        if metric(jt, strong(jt, preferred, eps)) <= clean / 2:
            return preferred, eps
    return preferred, budgets(jt, preferred)[-1]


def summary(report: dict, eps: float) -> dict:
    out = dict(clean=metric(report, 'clean'))
    for m in MODALITIES:
        out[f'acc_{m}_only'] = report['metrics'].get(f'acc/{m}_top1')
        out[f'missing_{m}'] = metric(report, f'missing_{m}')
        out[f'missing_{m}_feat'] = metric(report, f'missing_{m}_feat')
        out[f'strong_{m}'] = metric(report, strong(report, m, eps))
        out[f'pgd_{m}'] = metric(report, f'pgd_{m}@{eps}')
        out[f'fgm_{m}'] = metric(report, f'fgm_{m}@{eps}')
        out[f'certified_{m}'] = metric(report, f'certified_{m}@{eps}')
    out['pgd_joint@1.0'] = metric(report, 'pgd_joint@1.0')
    out['certified@1.0'] = metric(report, 'certified@1.0')
    out['budget'] = eps
    return out


def checks(jt: dict, crmt: dict, preferred: str) -> dict:
    """The demo's claims at one budget, on the strong worst case."""
    key = f'strong_{preferred}'
    return dict(
        preferred_modality=preferred,
        jt_keeps_at_most_half=jt[key] <= jt['clean'] / 2,
        crmt_clean_within_2_points=crmt['clean'] >= jt['clean'] - 0.02,
        crmt_at_least_10_points_more_under_attack=(
            crmt[key] >= jt[key] + 0.10))


def correct_column(report: dict, name: str):
    """Per test clip: 1/0 correct under ``name`` (None off the subsample)."""
    return [None if r['preds'].get(name) is None else
            int(r['preds'][name] == r['label']) for r in report['records']]


def aggregate(runs: dict, preferred: str) -> dict:
    """Mean, min and max per metric over seeds at one common budget, each
    seed's checks, and a paired bootstrap interval of CRMT - JT.

    Args:
        runs (dict): ``{seed: {'jt': report, 'crmt': report}}`` with the
            per-clip ``records`` of each report.
        preferred (str): the preferred modality (of the first seed's JT).

    Returns:
        dict: ``budget``, ``per_seed`` (rows and checks), ``mean``,
        ``min``, ``max`` (``{model: {metric: value}}``) and ``difference``
        (``{metric: bootstrap interval}`` for clean accuracy and, on each
        modality, the strong worst case and the reference PGD).
    """
    # At the largest per-seed budget every seed's JT is at most at half
    # (accuracy is monotone in the budget under nested sweeps).
    eps = max(choose_budget(r['jt'])[1] for r in runs.values())
    per_seed = {}
    for seed, pair in runs.items():
        rows = {name: summary(pair[name], eps) for name in ('jt', 'crmt')}
        per_seed[seed] = dict(rows, checks=checks(rows['jt'], rows['crmt'],
                                                   preferred))
    out = dict(budget=eps, preferred_modality=preferred, seeds=list(runs),
               per_seed=per_seed)
    for stat, fn in (('mean', lambda v: sum(v) / len(v)), ('min', min),
                     ('max', max)):
        out[stat] = {}
        for name in ('jt', 'crmt'):
            keys = [k for k in per_seed[next(iter(runs))][name]
                    if k != 'budget']
            out[stat][name] = {
                k: None if any(per_seed[s][name][k] is None for s in runs)
                else fn([per_seed[s][name][k] for s in runs]) for k in keys}
    difference = {}
    first = next(iter(runs.values()))['jt']
    for label, name in [('clean', None)] + [
            (f'strong_{m}', strong(first, m, eps)) for m in MODALITIES] + [
            (f'pgd_{m}', f'pgd_{m}@{eps}') for m in MODALITIES]:
        a, b = [], []
        for pair in runs.values():
            if name is None:
                ca = [int(r['preds']['clean'] == r['label'])
                      for r in pair['crmt']['records']]
                cb = [int(r['preds']['clean'] == r['label'])
                      for r in pair['jt']['records']]
            else:
                ca = correct_column(pair['crmt'], name)
                cb = correct_column(pair['jt'], name)
            keep = [i for i, (u, v) in enumerate(zip(ca, cb))
                    if u is not None and v is not None]
            a.append([ca[i] for i in keep])
            b.append([cb[i] for i in keep])
        if len({len(v) for v in a}) != 1 or not a[0]:
            difference[label] = None  # subsamples of different sizes
            continue
        difference[label] = paired_bootstrap(a, b, n_boot=10000, seed=0)
    out['difference'] = difference
    out['all_seeds_hold'] = all(
        all(v for k, v in row['checks'].items() if k != 'preferred_modality')
        for row in per_seed.values())
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


def run_seed(seed: int, work_dir: str, args) -> dict:
    """Train and evaluate JT and CRMT with one seed into ``work_dir``."""
    return {name: train_and_test(name, config, work_dir, seed, args)
            for name, config in MODELS}


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    os.makedirs(args.work_dir, exist_ok=True)
    print(f'Preparing AV-Digits in {args.data_root} ...', flush=True)
    several = len(args.seeds) > 1
    # One data set for every training seed of a multi-seed run.
    prepare_avdigits(args.data_root, seed=0 if several else args.seeds[0])
    dirs = {s: osp.join(args.work_dir, f'seed_{s}') if several
            else args.work_dir for s in args.seeds}
    runs = {s: run_seed(s, dirs[s], args) for s in args.seeds}
    if args.train_only:
        print(f'Trained {len(runs) * len(MODELS)} models in '
              f'{time.perf_counter() - start:.0f} s; run again without '
              '--train-only to evaluate them', flush=True)
        return None
    first = runs[args.seeds[0]]
    preferred, eps = choose_budget(first['jt'])
    result = aggregate(runs, preferred)
    eps = result['budget']
    rows = result['per_seed'][args.seeds[0]]
    protocol = {name: first[name]['protocol'] for name in ('jt', 'crmt')}
    trust = {f'{name}_seed{s}': runs[s][name]['trust'] for s in runs
             for name in ('jt', 'crmt')}
    result.update(jt=rows['jt'], crmt=rows['crmt'], checks=rows['checks'],
                  protocol=protocol, trust=trust,
                  seconds=round(time.perf_counter() - start, 1),
                  note='accuracies in [0, 1] on the 539 AV-Digits test '
                  'clips (the strong ensemble, version '
                  f'{args.strong_version!r} with steps={args.strong_steps}, '
                  f'targets={args.strong_targets}, queries='
                  f'{args.strong_queries} (0 = the version default), on a '
                  f'seeded subsample of about {args.strong_subset or "all"} '
                  'of them); budgets are '
                  'per-sample L2 norms in the normalised input space; '
                  'certified accuracies are empirical (estimated tau)')
    with open(osp.join(args.work_dir, 'report.json'), 'w') as f:
        json.dump(result, f, indent=2)
    print('\n=== JT vs CRMT on AV-Digits ===')
    lines = [print_table({n: rows[n] for n in ('jt', 'crmt')}, eps)]
    if several:
        lines.append(seeds_table(result))
        print(lines[-1])
    compare_reports([osp.join(dirs[args.seeds[0]], n, 'robustness.json')
                     for n, _ in MODELS], ['JT', 'CRMT'], args.work_dir,
                    stem='robustness')
    per_seed = {s: r['checks'] for s, r in result['per_seed'].items()}
    with open(osp.join(args.work_dir, 'report.md'), 'w') as f:
        f.write('\n\n'.join(lines) + '\n\nChecks per seed: '
                + json.dumps(per_seed) + '\n')
    print(f'\nChecks per seed: {json.dumps(per_seed)}')
    print(f'Wrote {args.work_dir}/report.json, report.md, robustness.png '
          f'in {result["seconds"]:.0f} s')


def seeds_table(result: dict) -> str:
    """Mean [min, max] over seeds, and the CRMT - JT interval."""
    lines = [f'| metric (L2 budget {result["budget"]}, seeds '
             f'{result["seeds"]}) | JT mean [min, max] | CRMT mean [min, '
             'max] | CRMT - JT (95% paired bootstrap) |',
             '|---|---|---|---|']
    for key, value in result['mean']['jt'].items():
        cells = []
        for name in ('jt', 'crmt'):
            m = result['mean'][name][key]
            cells.append('-' if m is None else
                         f'{m:.3f} [{result["min"][name][key]:.3f}, '
                         f'{result["max"][name][key]:.3f}]')
        d = result['difference'].get(key)
        cells.append('' if d is None else
                     f'{d["mean"]:+.3f} [{d["low"]:+.3f}, {d["high"]:+.3f}]')
        lines.append(f'| {key} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
