"""The main job: JT vs CRMT on the embedded AV-Digits dataset (or, with
``--dataset fsdd_mnist``, on real spoken and handwritten digits).

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
the checks are stated per seed.

``--dataset fsdd_mnist --fsdd DIR --mnist DIR`` prepares FSDD-MNIST with
``tools/data/prepare_fsdd_mnist.py`` (``--split speaker --test-speakers
NAME`` for held-out speakers) and runs the same protocol on it, the strong
ensemble on both modalities at every budget, on a seeded subsample of about
128 test clips. ``--pairs jt:crmt mmat:crmt_at mixup:crmt_mix`` adds the
paper's other baseline/CRMT pairs; each pair gets its own table. A finished
training whose dumped config equals the current one is reused (an
interrupted run resumes); a finished training with a different config is
refused, never silently reused.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import crmt_mm.compat  # noqa: E402,F401  (before Config.fromfile)
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

sys.path.insert(0, osp.join(ROOT, 'tools', 'data'))
import prepare_fsdd_mnist  # noqa: E402

from crmt_mm.data_prep.avdigits import prepare_avdigits  # noqa: E402
from crmt_mm.evaluation.report import compare_reports  # noqa: E402
from crmt_mm.evaluation.statistics import paired_bootstrap  # noqa: E402
from crmt_mm.utils import release_loader_workers  # noqa: E402

MODALITIES = ('audio', 'visual')
#: Baseline/CRMT pairs of the paper, as ``--pairs`` spells them; a model's
#: config is ``configs/<model>_<dataset>.py``.
PAIRS = ('jt:crmt', 'mmat:crmt_at', 'mixup:crmt_mix')
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
#: What differs between the demo's data sets. ``val``: the split that
#: validates during training. On FSDD-MNIST (250 test clips: FSDD's 5 test
#: takes per speaker and digit) the strong ensemble attacks a seeded half of
#: the test clips on *both* modalities at every reference budget, since
#: which modality JT prefers is not known beforehand on real data; half, so
#: that 3 seeds of JT and CRMT fit an hour on 2 CPU cores.
DATASETS = dict(
    avdigits=dict(title='AV-Digits', root='data/avdigits', val='test',
                  strong_budgets=STRONG_BUDGETS,
                  strong_subset=STRONG_SUBSET['size']),
    fsdd_mnist=dict(title='FSDD-MNIST', root='data/fsdd_mnist', val='val',
                    strong_budgets=dict(audio=[1.0, 2.0, 4.0],
                                        visual=[1.0, 2.0, 4.0], joint=None),
                    strong_subset=128))
#: Test clips of the demo's randomized-smoothing certificates (the config's
#: 16 cost about a quarter of the demo's evaluation time), and the radii of
#: its certified-accuracy table: at sigma = 0.25 and n = 512 no radius can
#: exceed 0.55, so the attack budgets alone would only show zeros.
SMOOTHING_SUBSET = 8
SMOOTHING_RADII = [0.0, 0.25, 0.5]
#: Written next to a finished training: the config it was trained with.
STAMP = 'demo_trained.json'
#: Written next to a finished evaluation: its config, report and records.
EVALUATED = 'demo_evaluated.json'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--dataset', choices=sorted(DATASETS),
                        default='avdigits',
                        help='avdigits (generated, no download) or '
                        'fsdd_mnist (real; needs --fsdd and --mnist)')
    parser.add_argument('--data-root', default=None,
                        help='where the data is prepared (cached); default '
                        'data/<dataset>, data/fsdd_mnist_speaker_<names> '
                        'for --split speaker')
    parser.add_argument('--pairs', nargs='+', default=['jt:crmt'],
                        choices=PAIRS, metavar='BASE:CRMT',
                        help=f'baseline:CRMT model pairs, of {PAIRS}')
    parser.add_argument('--fsdd', help='FSDD recordings/ folder '
                        '(fsdd_mnist)')
    parser.add_argument('--mnist', help='folder of MNIST idx files '
                        '(fsdd_mnist)')
    parser.add_argument('--split', choices=('standard', 'speaker'),
                        default='standard',
                        help='fsdd_mnist protocol: FSDD takes 0-4 as test '
                        'set, or held-out --test-speakers')
    parser.add_argument('--test-speakers', nargs='+', default=[],
                        metavar='NAME', help='held-out FSDD speakers')
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
                        default=None,
                        help='clips (about, seeded) the strong ensemble '
                        'attacks; 0 = every test clip (default '
                        f'{STRONG_SUBSET["size"]} on AV-Digits, 128 on '
                        'FSDD-MNIST)')
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
    spec = DATASETS[args.dataset]
    if args.dataset == 'fsdd_mnist' and not (args.fsdd and args.mnist):
        parser.error('--dataset fsdd_mnist needs --fsdd DIR (the FSDD '
                     'recordings/ folder) and --mnist DIR (MNIST idx files)')
    if args.dataset == 'avdigits' and (
            args.fsdd or args.mnist or args.split != 'standard'
            or args.test_speakers or args.pairs != ['jt:crmt']):
        parser.error('--fsdd, --mnist, --split, --test-speakers and --pairs '
                     'are options of --dataset fsdd_mnist')
    if args.data_root is None:
        args.data_root = spec['root'] + (
            '_speaker_' + '_'.join(sorted(args.test_speakers))
            if args.split == 'speaker' else '')
    if args.strong_subset is None:
        args.strong_subset = spec['strong_subset']
    args.models = [m for pair in args.pairs for m in pair.split(':')]
    return args


def point_to(cfg: Config, data_root: str, dataset: str = 'avdigits'
             ) -> None:
    """Use ``data_root`` for every dataloader of ``cfg``."""
    for key, split in (('train_dataloader', 'train'),
                       ('val_dataloader', DATASETS[dataset]['val']),
                       ('test_dataloader', 'test')):
        loader = cfg[key]['dataset']
        loader['ann_file'] = osp.join(data_root, f'{dataset}_{split}.txt')
        loader['data_prefix'] = dict(
            img=osp.join(data_root, 'rawframes', split),
            audio=osp.join(data_root, 'audio', split))


def parse_options(pairs):
    from mmengine.config import DictAction
    options = {}
    for pair in pairs:
        key, value = pair.split('=', 1)
        options[key] = DictAction._parse_iterable(value)
    return options


def config_of(model: str, dataset: str) -> str:
    """``configs/<model>_<dataset>.py``."""
    return f'configs/{model}_{dataset}.py'


def use_prepared_norm(cfg: Config, data_root: str, dataset: str) -> None:
    """Set the visual mean/std of ``cfg`` to the prepared data's.

    FSDD-MNIST's constants depend on the split (the speaker protocol trains
    on other clips); the configs hold the standard split's, which this
    leaves unchanged. ``PreparedNormCheckHook`` still checks the result.
    """
    if dataset != 'fsdd_mnist':
        return
    with open(osp.join(data_root, prepare_fsdd_mnist.NORM_FILE)) as f:
        visual = json.load(f)['visual']
    imgs = cfg.model.data_preprocessor.preprocessors.imgs
    mean, std = round(visual['mean'], 2), round(visual['std'], 2)
    if abs(imgs.mean[0] - mean) > 0.01 or abs(imgs.std[0] - std) > 0.01:
        imgs.mean, imgs.std = [mean] * 3, [std] * 3


def configure(config: str, work_dir: str, seed: int, args) -> Config:
    """The demo's config of one run (data, seed, strong-ensemble knobs)."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    dataset = getattr(args, 'dataset', 'avdigits')
    point_to(cfg, args.data_root, dataset)
    use_prepared_norm(cfg, args.data_root, dataset)
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
                p['eps'] = DATASETS[dataset]['strong_budgets'][where]
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
    cached = finished_evaluation(cfg)
    if cached is not None and not args.train_only:
        print(f'=== {name} (seed {seed}): reusing the finished evaluation '
              f'{osp.join(cfg.work_dir, EVALUATED)} ===', flush=True)
        return cached
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
    with open(osp.join(cfg.work_dir, EVALUATED), 'w') as f:
        json.dump(dict(config=cfg.pretty_text, report=report), f)
    return report


def finished_evaluation(cfg: Config) -> Optional[dict]:
    """The report (with per-clip records) of a finished evaluation of
    exactly ``cfg`` (training and evaluation keys), or None: a re-run, e.g.
    to re-aggregate the seeds, then costs no evaluation."""
    path = osp.join(cfg.work_dir, EVALUATED)
    if finished_checkpoint(cfg) is None or not osp.exists(path):
        return None
    with open(path) as f:
        done = json.load(f)
    return done['report'] if done['config'] == cfg.pretty_text else None


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


def weakest_correct(report: dict, eps: float):
    """Per clip: 1 if the clip survives the strong attack on *every*
    modality at ``eps``, 0 if not, None off the attacked subsample.

    This is the weakest-modality robust accuracy per clip: an attacker who
    may pick the modality picks, for each clip, the one that breaks it.
    """
    columns = [correct_column(report, strong(report, m, eps))
               for m in MODALITIES]
    return [None if None in cells else min(cells)
            for cells in zip(*columns)]


def mean_of(column) -> Optional[float]:
    kept = [c for c in column if c is not None]
    return sum(kept) / len(kept) if kept else None


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
    out['strong_weakest'] = mean_of(weakest_correct(report, eps)) \
        if all(out[f'strong_{m}'] is not None for m in MODALITIES) else None
    out['pgd_joint@1.0'] = metric(report, 'pgd_joint@1.0')
    out['certified@1.0'] = metric(report, 'certified@1.0')
    for key, value in report['metrics'].items():
        # Sound certificates of the smoothed classifier (their own radii).
        if key.startswith('robust/smoothing') and '@' in key:
            out[key[len('robust/'):]] = value
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


def _spread(values, stat):
    if any(v is None for v in values):
        return None
    return dict(mean=lambda v: sum(v) / len(v), min=min, max=max)[stat](
        values)


def aggregate(runs: dict, preferred: str, base: str = 'jt',
              ours: str = 'crmt') -> dict:
    """Mean, min and max per metric over seeds at one common budget, each
    seed's checks, and a paired bootstrap interval of ``ours - base``.

    Args:
        runs (dict): ``{seed: {base: report, ours: report}}`` with the
            per-clip ``records`` of each report.
        preferred (str): the preferred modality (of the first seed's
            baseline).
        base (str): the baseline's name. Defaults to ``'jt'``.
        ours (str): the CRMT model's name. Defaults to ``'crmt'``.

    Returns:
        dict: ``budget``, ``per_seed`` (rows and checks), ``mean``,
        ``min``, ``max`` (``{model: {metric: value}}``), ``difference``
        (``{metric: bootstrap interval}`` for clean accuracy and, on each
        modality and on the weakest one, the strong worst case, and the
        reference PGD) and ``curves`` (every strong budget).
    """
    # At the largest per-seed budget every seed's JT is at most at half
    # (accuracy is monotone in the budget under nested sweeps).
    eps = max(choose_budget(r[base])[1] for r in runs.values())
    per_seed = {}
    for seed, pair in runs.items():
        rows = {name: summary(pair[name], eps) for name in (base, ours)}
        per_seed[seed] = dict(rows, checks=checks(rows[base], rows[ours],
                                                   preferred))
    out = dict(budget=eps, preferred_modality=preferred, seeds=list(runs),
               models=[base, ours], per_seed=per_seed)
    first = next(iter(runs))
    for stat in ('mean', 'min', 'max'):
        out[stat] = {}
        for name in (base, ours):
            keys = [k for k in per_seed[first][name] if k != 'budget']
            out[stat][name] = {
                k: _spread([per_seed[s][name].get(k) for s in runs], stat)
                for k in keys}
    out['difference'] = differences(runs, eps, base, ours)
    out['interval'] = {n: intervals(runs, eps, n) for n in (base, ours)}
    out['curves'] = curves(runs, base, ours)
    out['all_seeds_hold'] = all(
        all(v for k, v in row['checks'].items() if k != 'preferred_modality')
        for row in per_seed.values())
    return out


def clip_columns(runs: dict, eps: float, name: str) -> Dict[str, list]:
    """Per metric, ``[seed][clip]`` 1/0 scores of model ``name`` (None off
    the attacked subsample), for the metrics the intervals are given of."""
    first = next(iter(runs.values()))[name]
    columns = dict(clean=lambda rep: [int(r['preds']['clean'] == r['label'])
                                      for r in rep['records']])
    for m in MODALITIES:
        columns[f'strong_{m}'] = lambda rep, m=m: correct_column(
            rep, strong(first, m, eps))
    columns['strong_weakest'] = lambda rep: weakest_correct(rep, eps)
    for m in MODALITIES:
        columns[f'pgd_{m}'] = lambda rep, m=m: correct_column(
            rep, f'pgd_{m}@{eps}')
    return {key: [column(pair[name]) for pair in runs.values()]
            for key, column in columns.items()}


def _kept(a, b):
    """Drop the clips that either column lacks (off the subsample)."""
    keep = [i for i, (u, v) in enumerate(zip(a, b))
            if u is not None and v is not None]
    return [a[i] for i in keep], [b[i] for i in keep]


def differences(runs: dict, eps: float, base: str, ours: str) -> dict:
    """Paired bootstrap intervals of ``ours - base`` (seeds, then clips)."""
    cols = {n: clip_columns(runs, eps, n) for n in (base, ours)}
    out = {}
    for key in cols[base]:
        a, b = zip(*[_kept(u, v) for u, v in zip(cols[ours][key],
                                                 cols[base][key])])
        if len({len(v) for v in a}) != 1 or not a[0]:
            out[key] = None  # subsamples of different sizes
            continue
        out[key] = paired_bootstrap(a, b, n_boot=10000, seed=0)
    return out


def intervals(runs: dict, eps: float, name: str) -> dict:
    """Bootstrap 95 % interval (seeds, then clips) of each accuracy of
    model ``name``: the sampling uncertainty of a table cell."""
    out = {}
    for key, per_seed in clip_columns(runs, eps, name).items():
        kept = [[c for c in column if c is not None] for column in per_seed]
        if len({len(v) for v in kept}) != 1 or not kept[0]:
            out[key] = None
            continue
        zeros = [[0] * len(v) for v in kept]
        out[key] = paired_bootstrap(kept, zeros, n_boot=10000, seed=0)
    return out


def curves(runs: dict, base: str, ours: str) -> dict:
    """Strong robust accuracy per modality, and of the weakest modality,
    at every budget both modalities were attacked at: ``{model: {row:
    {eps: dict(mean, min, max)}}}`` over seeds."""
    first = next(iter(runs.values()))[base]
    common = sorted(set(budgets(first, MODALITIES[0])).intersection(
        *[budgets(first, m) for m in MODALITIES[1:]]))
    out = {}
    for name in (base, ours):
        rows = {}
        for m in MODALITIES:
            rows[f'strong_{m}'] = {
                eps: [metric(pair[name], strong(pair[name], m, eps))
                      for pair in runs.values()]
                for eps in budgets(first, m)}
        rows['strong_weakest'] = {
            eps: [mean_of(weakest_correct(pair[name], eps))
                  for pair in runs.values()] for eps in common}
        out[name] = {row: {eps: {stat: _spread(values, stat)
                                 for stat in ('mean', 'min', 'max')}
                           for eps, values in by_eps.items()}
                     for row, by_eps in rows.items()}
    return out


def print_table(rows: dict, eps: float) -> str:
    keys = list(next(iter(rows.values())))
    keys.remove('budget')
    lines = [f'| metric (L2 budget {eps}) | ' + ' | '.join(rows) + ' |',
             '|---' * (len(rows) + 1) + '|']
    for key in keys:
        cells = ['-' if rows[r].get(key) is None else f'{rows[r][key]:.3f}'
                 for r in rows]
        lines.append(f'| {key} | ' + ' | '.join(cells) + ' |')
    table = '\n'.join(lines)
    print(table)
    return table


def run_seed(seed: int, work_dir: str, args) -> dict:
    """Train and evaluate every model of ``args.models`` with one seed."""
    dataset = getattr(args, 'dataset', 'avdigits')
    return {name: train_and_test(name, config_of(name, dataset), work_dir,
                                 seed, args)
            for name in getattr(args, 'models', ('jt', 'crmt'))}


def prepare_data(args) -> None:
    """Generate AV-Digits or prepare FSDD-MNIST into ``args.data_root``."""
    several = len(args.seeds) > 1
    if args.dataset == 'avdigits':
        # One data set for every training seed of a multi-seed run.
        prepare_avdigits(args.data_root,
                         seed=0 if several else args.seeds[0])
        return
    argv = ['--fsdd', args.fsdd, '--mnist', args.mnist, '--out',
            args.data_root, '--split', args.split, '--workers', '2']
    if args.test_speakers:
        argv += ['--test-speakers'] + list(args.test_speakers)
    prepare_fsdd_mnist.main(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    title = DATASETS[args.dataset]['title']
    os.makedirs(args.work_dir, exist_ok=True)
    print(f'Preparing {title} in {args.data_root} ...', flush=True)
    prepare_data(args)
    several = len(args.seeds) > 1
    dirs = {s: osp.join(args.work_dir, f'seed_{s}') if several
            else args.work_dir for s in args.seeds}
    runs = {s: run_seed(s, dirs[s], args) for s in args.seeds}
    if args.train_only:
        print(f'Trained {len(runs) * len(args.models)} models in '
              f'{time.perf_counter() - start:.0f} s; run again without '
              '--train-only to evaluate them', flush=True)
        return None
    first = runs[args.seeds[0]]
    results, lines = {}, []
    for pair in args.pairs:
        base, ours = pair.split(':')
        pair_runs = {s: {n: runs[s][n] for n in (base, ours)} for s in runs}
        preferred, _ = choose_budget(first[base])
        result = aggregate(pair_runs, preferred, base, ours)
        rows = result['per_seed'][args.seeds[0]]
        result.update({base: rows[base], ours: rows[ours]},
                      checks=rows['checks'],
                      protocol={n: first[n]['protocol']
                                for n in (base, ours)},
                      trust={f'{n}_seed{s}': runs[s][n]['trust']
                             for s in runs for n in (base, ours)})
        results[pair] = result
        print(f'\n=== {base.upper()} vs {ours.upper()} on {title} ===')
        lines.append(f'### {base.upper()} vs {ours.upper()}, seed '
                     f'{args.seeds[0]}\n\n' + print_table(
                         {n: rows[n] for n in (base, ours)},
                         result['budget']))
        lines.append(seeds_table(result))
        print(lines[-1])
        lines.append(curves_table(result))
        print(lines[-1])
    report = dict(results.pop('jt:crmt', None) or {}, pairs=results,
                  dataset=args.dataset, split=args.split,
                  test_speakers=args.test_speakers,
                  seconds=round(time.perf_counter() - start, 1),
                  note=f'accuracies in [0, 1] on the {title} test clips '
                  '(the strong ensemble, version '
                  f'{args.strong_version!r} with steps={args.strong_steps}, '
                  f'targets={args.strong_targets}, queries='
                  f'{args.strong_queries} (0 = the version default), on a '
                  f'seeded subsample of about {args.strong_subset or "all"} '
                  'of them); budgets are per-sample L2 norms in the '
                  'normalised input space; certified accuracies from the '
                  "CRMT radius are empirical (estimated tau), 'smoothed' "
                  'ones are sound (randomized smoothing); strong_weakest: '
                  'clips that survive the strong attack on every modality')
    with open(osp.join(args.work_dir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=2)
    if args.strong_subset:
        lines.append(
            f'Quick estimate: the attacks ran on a seeded subsample of about '
            f'{args.strong_subset} test clips; the 95% CI columns give each '
            'cell\'s sampling interval (bootstrap over seeds and clips). '
            'Use --strong-subset 0 for every test clip.')
        print(lines[-1])
    names = args.models
    compare_reports([osp.join(dirs[args.seeds[0]], n, 'robustness.json')
                     for n in names], [n.upper() for n in names],
                    args.work_dir, stem='robustness')
    checks_text = json.dumps({pair: {s: r['checks'] for s, r in
                                     res['per_seed'].items()}
                              for pair, res in dict(
                                  results, **({'jt:crmt': report}
                                              if 'per_seed' in report
                                              else {})).items()})
    with open(osp.join(args.work_dir, 'report.md'), 'w') as f:
        f.write(f'# {title}\n\n' + '\n\n'.join(lines) +
                '\n\nChecks per seed: ' + checks_text + '\n')
    print(f'\nChecks per seed: {checks_text}')
    print(f'Wrote {args.work_dir}/report.json, report.md, robustness.png '
          f'in {time.perf_counter() - start:.0f} s')


def _cell(stats: dict) -> str:
    if stats['mean'] is None:
        return '-'
    return f'{stats["mean"]:.3f} [{stats["min"]:.3f}, {stats["max"]:.3f}]'


def _interval(d: Optional[dict], signed: bool = False) -> str:
    if d is None:
        return ''
    form = '{:+.3f}' if signed else '{:.3f}'
    return (form.format(d['mean']) + ' [' + form.format(d['low']) + ', '
            + form.format(d['high']) + ']')


def seeds_table(result: dict, keys: Optional[list] = None) -> str:
    """Mean [min, max] over seeds with each cell's bootstrap interval, and
    the CRMT - baseline interval; ``keys`` picks and orders the rows (all
    by default), e.g. for the README."""
    base, ours = result.get('models', ('jt', 'crmt'))
    ci = result.get('interval', {})
    lines = [f'| metric (L2 budget {result["budget"]}, seeds '
             f'{result["seeds"]}) | {base.upper()} mean [min, max] | '
             f'{base.upper()} 95% CI | {ours.upper()} mean [min, max] | '
             f'{ours.upper()} 95% CI | {ours.upper()} - {base.upper()} '
             '(95% paired bootstrap) |', '|---|---|---|---|---|---|']
    for key in keys or list(result['mean'][base]):
        cells = []
        for name in (base, ours):
            cells.append(_cell({stat: result[stat][name][key]
                                for stat in ('mean', 'min', 'max')}))
            cells.append(_interval(ci.get(name, {}).get(key)))
        cells.append(_interval(result['difference'].get(key), signed=True))
        lines.append(f'| {key} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def curves_table(result: dict) -> str:
    """Strong robust accuracy at every budget, per modality and weakest."""
    base, ours = result['models']
    table = result['curves']
    eps_all = sorted({eps for rows in table.values() for by in rows.values()
                      for eps in by})
    lines = [f'| strong attack, mean [min, max] over seeds '
             f'{result["seeds"]} | ' + ' | '.join(
                 f'L2 {eps}' for eps in eps_all) + ' |',
             '|---' * (len(eps_all) + 1) + '|']
    for name in (base, ours):
        for row, by_eps in table[name].items():
            lines.append(f'| {name.upper()} {row} | ' + ' | '.join(
                _cell(by_eps[eps]) if eps in by_eps else '' for eps in
                eps_all) + ' |')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
