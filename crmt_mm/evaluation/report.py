"""Robustness reports: JSON, a markdown table and accuracy-vs-budget plots.

The one owner of the report: :func:`build_report` lays out one evaluation
from its per-sample records, the perturbations' descriptions, the protocol
metadata of the driver (model, tau provenance, clamp ranges, timings) and
the training-progress tag; :func:`write_report` writes it as JSON, markdown
and PNG. Several runs (e.g. JT vs CRMT) are put side by side by
:func:`compare_reports` (``tools/robustness_report.py``). Both use the same
:func:`render_markdown` and :func:`plot_curves`, so a single run is simply a
comparison of one.

Plots use matplotlib's object-oriented API with the Agg canvas (no pyplot),
so writing a report never changes the caller's matplotlib backend.
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from .smoothing_eval import (EMPIRICAL_LABEL, smoothing_scalars,
                             summarize_smoothing)
from .summary import scalars, summarize
from .trust import trust_checks

#: Version tag of the report layout (``robustness.json``).
REPORT_FORMAT = 'crmt_mm.robustness/1'

#: Line style per curve kind; colours tell the runs apart.
LINE_STYLES = {'pgd': '-', 'fgm': '--', 'worst': '-.', 'noise': ':',
               'certified': (0, (1, 1)), 'smoothing': (0, (5, 1, 1, 1)),
               'weakest': (0, (3, 1, 1, 1, 1, 1))}
MARKERS = {'pgd': 'o', 'fgm': 's', 'worst': 'v', 'noise': 'd',
           'certified': 'x', 'smoothing': '', 'weakest': '^'}

#: One-line meaning of the weakest-modality records in the markdown.
WEAKEST_NOTE = (
    'Weakest modality (`weakest@<eps>`): a clip counts as robust only if it '
    'survives every uni-modal attack on every modality at that budget, i.e. '
    'the accuracy against an attacker who picks, per clip, the modality '
    'that breaks it; the modality columns are each modality\'s worst case '
    'over its attacks on the same clips.')


def build_report(records: List[dict], descriptions: List[dict],
                 protocol: dict, progress: Optional[str] = None,
                 groups: Sequence[dict] = (),
                 prefix: Optional[str] = 'robust') -> dict:
    """The report of one evaluation (the ``robustness.json`` layout).

    Args:
        records (list[dict]): every sample's robust record, in dataset
            order (``RobustAccMetric.records`` after ``evaluate``).
        descriptions (list[dict]): ``describe()`` of each perturbation.
        protocol (dict): from ``RobustEvaluator.protocol()``: ``run``
            (stage, model, head, checkpoint, config, work_dir, world_size,
            seconds_per_batch_rank0), ``modalities``, ``clamp_ranges`` and
            ``certification`` (status, label, radii, tau provenance).
        progress (str, optional): training progress of this evaluation,
            e.g. ``'epoch_3'``. Defaults to None (outside training).
        groups (Sequence[dict]): worst-case groups
            (``RobustAccMetric.groups``). Defaults to ().
        prefix (str, optional): metric-name prefix, as the metric's.
            Defaults to ``'robust'``.

    Returns:
        dict: ``format``, ``run``, ``protocol`` (:func:`protocol_section`),
        ``trust`` (:func:`~crmt_mm.evaluation.trust.trust_checks`, None when
        the evaluator measured no trust figures), ``clamp_ranges``,
        ``perturbations``, ``worst_case``, ``curves``, ``certification``,
        ``smoothing`` (one section per smoothing entry of the protocol, see
        :func:`~crmt_mm.evaluation.smoothing_eval.summarize_smoothing`),
        ``metrics``.
    """
    cert = dict(protocol['certification'])
    summary = summarize(records, list(descriptions), list(groups),
                        protocol['modalities'],
                        cert['radii'] if cert['status'] == 'on' else None)
    run = {k: v for k, v in protocol['run'].items()
           if k != 'seconds_per_batch_rank0'}
    run.update(progress=progress, num_samples=summary['num_samples'],
               metric_prefix=prefix)
    if not records:
        run['status'] = 'no samples'
    if 'seconds_per_batch_rank0' in protocol['run']:
        run['seconds_per_batch_rank0'] = \
            protocol['run']['seconds_per_batch_rank0']
    if summary['certification'] is not None:
        section = summary['certification']
        cert.update(certified=section['certified'],
                    radius_median=section['radius_median'],
                    radius_units='normalised input space, L2',
                    violations=section['violations'])
    smoothing = summarize_smoothing(records, protocol.get('smoothing', []))
    metrics = dict(scalars(summary), **smoothing_scalars(smoothing))
    trust = None if not protocol.get('trust') or not records else \
        trust_checks(records, summary, protocol['trust'])
    return dict(format=REPORT_FORMAT, run=run,
                protocol=protocol_section(summary, protocol),
                trust=trust,
                clamp_ranges=protocol.get('clamp_ranges'),
                perturbations=summary['perturbations'],
                worst_case=summary['worst_case'], curves=summary['curves'],
                certification=cert, smoothing=smoothing,
                metrics={f'{prefix}/{k}' if prefix else k: v
                         for k, v in metrics.items()})


def protocol_section(summary: dict, protocol: dict) -> dict:
    """What was run, in one place: per perturbation its attacks, steps,
    restarts, losses, norm, budget, unit and space, seed and sample count;
    the subsample, the seeds and the normalisation space."""
    attacks = []
    for p in summary['perturbations']:
        s = p.get('settings', {})
        members = s.get('members')
        if not members or not isinstance(members[0], dict):
            # Not an ensemble (WorstCase lists its members by name).
            members = [dict(name=p['name'], type=p['type'], settings=s)]
        attacks.append(dict(
            name=p['name'], type=p['type'], norm=s.get('norm'),
            budget=s.get('eps', s.get('sigma')), unit=p.get('unit'),
            space=s.get('space'), seed=s.get('seed'),
            samples=p.get('evaluated_samples'),
            members=[dict(name=m['name'], type=m['type'],
                          steps=m['settings'].get('steps'),
                          restarts=m['settings'].get('restarts'),
                          losses=m['settings'].get('losses'),
                          targets=m['settings'].get('n_targets'),
                          queries=m['settings'].get('queries'),
                          random_start=m['settings'].get('random_start'))
                     for m in members]))
    subset = protocol.get('subset')
    run = protocol['run']
    return dict(
        attacks=attacks, num_samples=summary['num_samples'],
        subset=subset,
        seeds=dict(training=run.get('seed'),
                   attacks=sorted({a['seed'] for a in attacks
                                   if a['seed'] is not None}),
                   subset=None if subset is None else subset['seed']),
        normalisation_space='budgets are per-sample norms of the '
        'perturbation of the model input after the data preprocessor '
        "(mean/std normalised), unless an attack's unit is 'raw'")


def load_report(path: str) -> dict:
    """Read a ``robustness.json`` and check its format tag."""
    with open(path, encoding='utf-8') as f:
        report = json.load(f)
    if report.get('format') != REPORT_FORMAT:
        raise ValueError(f'{path} is not a crmt_mm robustness report '
                         f'(format {report.get("format")!r}, expected '
                         f'{REPORT_FORMAT!r})')
    return report


def write_report(report: dict, out_dir: str,
                 stem: str = 'robustness') -> Dict[str, str]:
    """Write ``<stem>.json``, ``<stem>.md`` and, if there is any curve,
    ``<stem>.png`` into ``out_dir`` (created).

    Returns:
        dict: ``{'json': path, 'md': path[, 'png': path]}``.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(json=osp.join(out_dir, f'{stem}.json'),
                 md=osp.join(out_dir, f'{stem}.md'),
                 png=osp.join(out_dir, f'{stem}.png'))
    with open(paths['json'], 'w', encoding='utf-8') as f:
        # Infinite radii (a modality the model ignores) stay Infinity.
        json.dump(report, f, indent=2, sort_keys=False)
    label = run_label(report)
    with open(paths['md'], 'w', encoding='utf-8') as f:
        f.write(render_markdown([report], [label]))
    if not plot_curves([report], [label], paths['png']):
        del paths['png']
    return paths


def compare_reports(paths: Sequence[str], labels: Optional[Sequence[str]],
                    out_dir: str, stem: str = 'robustness_compare'
                    ) -> Dict[str, str]:
    """One table and one figure for several runs (e.g. JT vs CRMT).

    Args:
        paths (Sequence[str]): ``robustness.json`` files.
        labels (Sequence[str], optional): one name per run; defaults to
            each run's work-dir name.
        out_dir (str): output directory (created).
        stem (str): file stem. Defaults to ``'robustness_compare'``.

    Returns:
        dict: ``{'md': path[, 'png': path]}``.
    """
    reports = [load_report(p) for p in paths]
    if labels is None:
        labels = [run_label(r) for r in reports]
    if len(labels) != len(reports):
        raise ValueError(f'got {len(labels)} labels for {len(reports)} '
                         'reports')
    if len(set(labels)) != len(labels):
        raise ValueError(f'labels must be distinct, got {list(labels)}')
    os.makedirs(out_dir, exist_ok=True)
    out = dict(md=osp.join(out_dir, f'{stem}.md'),
               png=osp.join(out_dir, f'{stem}.png'))
    with open(out['md'], 'w', encoding='utf-8') as f:
        f.write(render_markdown(reports, labels))
    if not plot_curves(reports, labels, out['png']):
        del out['png']
    return out


def run_label(report: dict) -> str:
    """Default name of a run: its work dir's base name."""
    work_dir = report['run'].get('work_dir') or 'run'
    return osp.basename(osp.normpath(work_dir))


# ---- markdown --------------------------------------------------------------

def _fmt(value) -> str:
    if value is None:
        return '—'
    if isinstance(value, float):
        return f'{value:.4f}' if math.isfinite(value) else str(value)
    return str(value)


def _table(header: List[str], rows: List[List]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(_fmt(v) for v in row) + ' |' for row in rows]
    return lines


def render_markdown(reports: Sequence[dict], labels: Sequence[str]) -> str:
    """Metric table (one column per run) plus each run's settings."""
    keys: List[str] = []
    for report in reports:
        keys += [k for k in report['metrics'] if k not in keys]
    lines = ['# Robustness report', '',
             'Accuracies in [0, 1]. Budgets are per-sample L2 norms in the '
             'normalised input space unless marked `_raw`. Certified '
             'accuracies are **empirical** (tau is a lower estimate of the '
             'Lipschitz constant), not guarantees.', '']
    if any(r.get('smoothing') for r in reports):
        lines += ['Entries `smoothing_*` are different: certificates of the '
                  '**smoothed** classifier, sound with probability 1 − α '
                  '(randomized smoothing, Cohen et al., ICML 2019).', '']
    lines += _table(['metric'] + list(labels),
                    [[k] + [r['metrics'].get(k) for r in reports]
                     for k in keys])
    for report, label in zip(reports, labels):
        lines += [''] + _run_section(report, label)
    return '\n'.join(lines) + '\n'


def _run_section(report: dict, label: str) -> List[str]:
    run = report['run']
    lines = [f'## {label}', '',
             f'- model: {run.get("model")} (head {run.get("head")}), '
             f'checkpoint: {run.get("checkpoint")}',
             f'- {run.get("stage")} set: {run.get("num_samples")} samples, '
             f'{run.get("world_size")} process(es)',
             f'- clamped to the valid raw range: '
             f'{report.get("clamp_ranges")}']
    cert = report['certification']
    if cert['status'] == 'on':
        tau = cert['tau']
        lines.append(f'- certification: {cert["label"]}; tau source: '
                     f'**{tau["source"]}**'
                     + (f' on {tau["num_samples"]} samples of {tau["data"]}'
                        if 'num_samples' in tau else ''))
    else:
        lines.append(f'- certification: {cert["status"]}'
                     + (f' ({cert["reason"]})' if 'reason' in cert else ''))
    lines += ['']
    rows = []
    for p in report['perturbations'] + report['worst_case']:
        s = p.get('settings', {})
        rows.append([p['name'], p.get('type', 'weakest modality'
                                      if p.get('kind') == 'weakest'
                                      else 'per-sample worst case'),
                     s.get('eps', s.get('sigma', p.get('budget'))),
                     s.get('eps_unit', p.get('unit')), s.get('steps'),
                     s.get('step_size'), s.get('random_start'),
                     s.get('clamp'), p.get('evaluated_samples'),
                     p['accuracy'],
                     p['status'] if p['status'] == 'ok'
                     else f'FAILED: {p["error"]}'])
    lines += _table(['perturbation', 'type', 'budget', 'unit', 'steps',
                     'step size', 'random start', 'clamp', 'samples',
                     'accuracy', 'status'], rows)
    lines += _weakest_lines(report['worst_case'])
    lines += _protocol_lines(report)
    lines += _trust_lines(report.get('trust'))
    if cert['status'] == 'on':
        names = list(cert['certified'])
        lines += ['', 'Certified accuracy (r > R):', '']
        lines += _table(['R'] + names,
                        [[r] + [cert['certified'][n][i] for n in names]
                         for i, r in enumerate(cert['radii'])])
        check = cert['violations']
        if check['checked']:
            lines += ['', f'Certificate check against {check["checked"]}: '
                      f'{check["total"]} violation(s)'
                      + (' — tau is underestimated.' if check['total']
                         else '.')]
    for section in report.get('smoothing', []):
        lines += [''] + _smoothing_lines(section)
    return lines


def _weakest_lines(groups: List[dict]) -> List[str]:
    """The weakest-modality records beside each modality's worst case."""
    weakest = [g for g in groups if g.get('kind') == 'weakest']
    if not weakest:
        return []
    modalities: List[str] = []
    for g in weakest:
        modalities += [m for m in g['by_modality'] if m not in modalities]
    rows = [[g['name']] + [g.get('per_modality', {}).get(m)
                           for m in modalities]
            + [g['accuracy'], g.get('evaluated_samples')] for g in weakest]
    return ['', WEAKEST_NOTE, ''] + _table(
        ['record'] + modalities + ['weakest', 'samples'], rows)


def _smoothing_lines(s: dict) -> List[str]:
    """Markdown of one randomized-smoothing section."""
    lines = [f'### Randomized smoothing `{s["name"]}`: {s["label"]}', '',
             f'- {s["num_samples"]} samples certified (subset: '
             f'{s["settings"].get("subset")}); smoothed accuracy '
             f'{_fmt(s["smoothed_accuracy"])}, abstention rate '
             f'{_fmt(s["abstention_rate"])}, median radius (correct) '
             f'{_fmt(s["radius_median"])}']
    check = s['violations']
    lines.append(f'- attacks on the smoothed classifier: {check["checked"]} '
                 f'(sample, attack) pairs inside the certified radius, '
                 f'{check["abstained"]} abstained, **{check["total"]} '
                 'violation(s)**' + (' — a bug.' if check['total'] else '.'))
    lines += ['', 'Certified accuracy of the smoothed classifier (correct '
              'and radius > R):', '']
    lines += _table(['R', 'certified'],
                    [[r, a] for r, a in zip(s['radii'], s['certified'])])
    bracket = s.get('bracket')
    if bracket:
        med, gap = bracket['median'], bracket['median_gap']
        lines += ['', f'Per-sample bracket on {bracket["modality"]} '
                  f'(medians over {len(bracket["samples"])} samples; '
                  'sound ≤ empirical ≤ attack is expected, the first is a '
                  'bound for the smoothed classifier, the others for the '
                  'base model):', '']
        lines += _table(
            ['quantity', 'median'],
            [['sound radius (smoothed, correct)', med['sound']],
             [f'CRMT r^(m)(x), {EMPIRICAL_LABEL}', med['empirical']],
             ['smallest breaking attack budget (base model)',
              med['attack']],
             ['gap: attack − sound', gap['attack_minus_sound']],
             ['gap: empirical − sound', gap['empirical_minus_sound']],
             ['gap: attack − empirical', gap['attack_minus_empirical']],
             ['samples with sound > attack', bracket['sound_above_attack']]])
    return lines


def _protocol_lines(report: dict) -> List[str]:
    proto = report.get('protocol')
    if not proto:
        return []
    lines = ['', '### Protocol', '',
             f'- samples: {proto["num_samples"]}; seeds: {proto["seeds"]}',
             f'- space: {proto["normalisation_space"]}']
    subset = proto.get('subset')
    if subset:
        lines.append(f'- **subsample**: {subset["perturbations"]} ran on a '
                     f'seeded subsample (size ~{subset["size"]} of '
                     f'{subset["dataset_size"]}, seed {subset["seed"]}); '
                     'see the samples column')
    rows = []
    for a in proto['attacks']:
        for m in a['members']:
            if m['steps'] is None and m['queries'] is None:
                continue
            rows.append([a['name'], m['name'], a['norm'], m['steps'],
                         m['restarts'], m['losses'], m['targets'],
                         m['queries'], a['seed'], a['samples']])
    if rows:
        lines += [''] + _table(['perturbation', 'attack', 'norm', 'steps',
                                'restarts', 'losses', 'targets', 'queries',
                                'seed', 'samples'], rows)
    ensembles = [p for p in report['perturbations'] if p.get('per_attack')]
    if ensembles:
        lines += ['', 'Ensembles, accuracy after each member (cumulative '
                  'per-sample worst case):', '']
        lines += _table(['ensemble', 'member', 'broke first',
                         'accuracy after'],
                        [[p['name'], a['name'], a['broken'],
                          a['robust_accuracy']]
                         for p in ensembles for a in p['per_attack']])
    return lines


def _trust_lines(trust: Optional[dict]) -> List[str]:
    if not trust:
        return []
    verdict = 'all pass' if trust['passed'] else 'SOME FAIL'
    lines = ['', f'### Trust checks ({verdict})', '']
    lines += _table(['check', 'status', 'figure', 'criterion'],
                    [[name, c['status'].upper(), c['figure'],
                      c['criterion']] for name, c in trust['checks'].items()])
    return lines


# ---- plots -----------------------------------------------------------------

def _series(report: dict) -> List[dict]:
    """Every plottable curve of a run, certified accuracies included."""
    out = []
    for name, c in report['curves'].items():
        axis = 'sigma' if c['x'] == 'sigma' else \
            ('eps_raw' if c['unit'] == 'raw' else 'eps')
        out.append(dict(name=name, kind=c['kind'], panel=(c['group'], axis),
                        x=c['budgets'], y=c['accuracy']))
    cert = report['certification']
    if cert['status'] == 'on':
        for group, values in cert['certified'].items():
            out.append(dict(name=f'certified ({group}), {EMPIRICAL_LABEL}',
                            kind='certified', panel=(group, 'eps'),
                            x=cert['radii'], y=values))
    for s in report.get('smoothing', []):
        if s['num_samples']:
            out.append(dict(name=f'smoothed, {s["label"]}', kind='smoothing',
                            panel=(s['scope'], 'eps'),
                            x=s['curve']['radius'], y=s['curve']['accuracy'],
                            step=True))
    return out


def plot_curves(reports: Sequence[dict], labels: Sequence[str],
                path: str) -> bool:
    """Accuracy vs budget, one panel per modality (and ``joint``), one
    colour per run, one line style per attack kind (as in the CRMT README
    figure). Returns False (no file) when there is no curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = [(label, s) for report, label in zip(reports, labels)
              for s in _series(report)]
    if not series:
        return False
    panels = []
    for _, s in series:
        if s['panel'] not in panels:
            panels.append(s['panel'])
    # Modality panels first (in order of appearance), 'joint' last.
    panels.sort(key=lambda p: (p[0] == 'joint', p[1] != 'eps'))
    xlabels = {'eps': 'L2 budget ε / radius R (normalised input space)',
               'eps_raw': 'L2 budget ε (raw units)',
               'sigma': 'Gaussian noise σ (normalised input space)'}
    titles = {'eps': '', 'eps_raw': ' (raw units)',
              'sigma': ' (Gaussian noise)'}
    fig = Figure(figsize=(5 * len(panels), 4), constrained_layout=True)
    FigureCanvasAgg(fig)
    several = len(labels) > 1
    for index, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        lines = [(label, s) for label, s in series if s['panel'] == panel]
        for number, (label, s) in enumerate(lines):
            # Colour = run when comparing, else one colour per curve.
            colour = f'C{labels.index(label) % 10}' if several \
                else f'C{number % 10}'
            # A step function: certified accuracy drops right after R.
            ax.plot(s['x'], s['y'], color=colour,
                    drawstyle='steps-post' if s.get('step') else 'default',
                    linestyle=LINE_STYLES.get(s['kind'], '-'),
                    marker=MARKERS.get(s['kind'], '.'), markersize=4,
                    label=f'{label}: {s["name"]}' if several
                    else s['name'])
        ax.set_title(panel[0] + titles[panel[1]])
        ax.set_xlabel(xlabels[panel[1]])
        ax.set_ylabel('accuracy')
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    return True
