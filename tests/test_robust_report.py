"""The one report builder: JSON layout from records and protocol, the
markdown, the figure, and the comparison tool."""
import json

import pytest

from crmt_mm.evaluation import build_report, compare_reports, load_report
from crmt_mm.evaluation.report import (REPORT_FORMAT, render_markdown,
                                        write_report)
from helpers import load_tool
from helpers_eval import desc, records

DESCS = [desc('pgd_audio@0.5', 'pgd', 0.5), desc('pgd_audio@1.0', 'pgd', 1.0)]


def protocol(work_dir='run', certification=None):
    return dict(run=dict(stage='test', model='M', head='H', work_dir=work_dir,
                         world_size=1,
                         seconds_per_batch_rank0=dict(clean=0.1)),
                modalities=['audio'], clamp_ranges=dict(audio=None),
                certification=certification or dict(status='off'))


def test_build_report_from_records_and_protocol(tmp_path):
    results = records([0, 0, 0], clean=[0, 0, 1],
                      **{'pgd_audio@0.5': [0, 1, 1],
                         'pgd_audio@1.0': [1, 1, 1]})
    for r, joint in zip(results, (0.2, 0.3, -1.0)):
        r.update(radius=joint, modality_radii=dict(audio=joint))
    cert = dict(status='on', label='empirical', radii=[0.0, 0.25],
                tau=dict(source='model'))
    report = build_report(results, DESCS, protocol(certification=cert),
                          progress='epoch_3')
    assert report['format'] == REPORT_FORMAT
    run = report['run']
    assert (run['progress'], run['num_samples'], run['metric_prefix']) == \
        ('epoch_3', 3, 'robust')
    assert run['seconds_per_batch_rank0'] == dict(clean=0.1)
    assert report['metrics']['robust/clean'] == pytest.approx(2 / 3)
    assert report['metrics']['robust/certified@0.25'] == pytest.approx(1 / 3)
    assert report['certification']['certified']['joint'] == \
        pytest.approx([2 / 3, 1 / 3])
    assert report['curves']['pgd_audio']['budgets'] == [0.0, 0.5, 1.0]
    assert report['perturbations'][0]['accuracy'] == pytest.approx(1 / 3)
    paths = write_report(report, str(tmp_path))
    assert sorted(paths) == ['json', 'md', 'png']
    assert load_report(paths['json'])['metrics'] == report['metrics']
    assert '| robust/pgd_audio@0.5 | 0.3333 |' in open(paths['md']).read()

    empty = build_report([], DESCS, protocol())
    assert empty['run']['status'] == 'no samples'
    assert empty['metrics'] == {} and empty['perturbations'] == []
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(format='x')))
    with pytest.raises(ValueError, match='not a crmt_mm robustness report'):
        load_report(str(bad))


def test_compare_reports_tool(tmp_path):
    paths = []
    for name, hits in (('jt', [0, 1, 1]), ('crmt', [0, 0, 1])):
        report = build_report(records(
            [0, 0, 0], clean=[0, 0, 0],
            **{'pgd_audio@0.5': hits, 'pgd_audio@1.0': [1, 1, 1]}),
            DESCS, protocol(work_dir=name))
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps(report))
        paths.append(str(path))
    out = str(tmp_path / 'cmp')
    load_tool('robustness_report').main(
        paths + ['--labels', 'JT', 'CRMT', '--out', out])
    table = (tmp_path / 'cmp' / 'robustness_compare.md').read_text()
    assert '| metric | JT | CRMT |' in table
    assert '| robust/pgd_audio@0.5 | 0.3333 | 0.6667 |' in table
    assert (tmp_path / 'cmp' / 'robustness_compare.png').stat().st_size > 0
    with pytest.raises(ValueError, match='labels'):
        compare_reports(paths, ['JT'], str(tmp_path))


def test_report_shows_the_weakest_modality(tmp_path):
    """The markdown puts weakest@<eps> beside each modality's worst case,
    with its one-line meaning; JSON, metrics and figure carry it too."""
    from crmt_mm.evaluation.report import WEAKEST_NOTE
    from crmt_mm.evaluation.summary import worst_case_groups
    descs = [dict(desc(f'pgd_{m}@{e}', 'pgd', e, label=m), modalities=[m],
                  group=m) for m in ('audio', 'visual') for e in (0.5, 1.0)]
    # Clip 0 survives both modalities, clip 1 only audio, clip 2 only
    # visual, clip 3 neither: each modality 2/4, the weakest 1/4.
    results = records([0, 0, 0, 0], clean=[0, 0, 0, 0],
                      **{'pgd_audio@0.5': [0, 0, 1, 1],
                         'pgd_visual@0.5': [0, 1, 0, 1],
                         'pgd_audio@1.0': [0, 1, 1, 1],
                         'pgd_visual@1.0': [0, 1, 1, 1]})
    proto = dict(protocol(), modalities=['audio', 'visual'])
    report = build_report(results, descs, proto,
                          groups=worst_case_groups('auto', descs))
    assert report['metrics']['robust/weakest@0.5'] == 0.25
    assert report['metrics']['robust/weakest@1.0'] == 0.25
    assert report['metrics']['robust/auc_weakest'] == pytest.approx(
        (0.5 * (1 + 0.25) * 0.5 + 0.25 * 0.5) / 1.0)
    entry = report['worst_case'][0]
    assert (entry['name'], entry['per_modality']) == \
        ('weakest@0.5', dict(audio=0.5, visual=0.5))
    paths = write_report(report, str(tmp_path))
    md = open(paths['md']).read()
    assert WEAKEST_NOTE in md
    assert '| record | audio | visual | weakest | samples |' in md
    assert '| weakest@0.5 | 0.5000 | 0.5000 | 0.2500 | 4 |' in md
    assert '| weakest@0.5 | weakest modality | 0.5000 | normalized |' in md
    assert '| robust/weakest@0.5 | 0.2500 |' in md
    assert 'png' in paths
    # Without it (one modality, or worst_case off) no weakest section.
    plain = build_report(results, descs, proto)
    assert WEAKEST_NOTE not in render_markdown([plain], ['x'])
