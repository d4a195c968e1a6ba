"""The strong ensemble inside RobustEvaluator: nested sweeps equal to the
naive schedule, per-member accuracies, the subsample and the report's
protocol and trust sections (real Runner, tiny AV-Digits)."""
import json
import os.path as osp

import pytest
from mmengine.runner import Runner

from crmt_mm.attacks import MultiModalAutoAttack, build_perturbations
from crmt_mm.evaluation import RobustAccMetric
from crmt_mm.evaluation.robust_evaluator import RobustEvaluator
from crmt_mm.evaluation.subset import check_subset, subset_mask
from helpers import tiny_config
from helpers_eval import robust_runner

#: A cheap ensemble sweep (few steps, targets and queries).
CHEAP = dict(type='MultiModalAutoAttack', version='standard',
             modality='audio', eps=[0.05, 0.2, 1.0], steps=3, n_targets=1,
             queries=10)


@pytest.fixture(scope='module')
def model_and_batch(avdigits_tiny, tmp_path_factory):
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny,
                      str(tmp_path_factory.mktemp('strong')))
    cfg.test_dataloader.batch_size = 10
    runner = Runner.from_cfg(cfg)
    model = runner.model.eval()
    loader = runner.test_dataloader
    batch = next(iter(loader))
    data = model.data_preprocessor(batch, False)
    x, y, _ = model.batch_to_modalities(data, preprocessed=True)
    return model, loader, x, y


def _records(model, loader, perturbations, **options):
    evaluator = RobustEvaluator(model, perturbations, **options)
    out = evaluator.run(loader, RobustAccMetric())
    return evaluator, out


def test_nested_sweep_in_evaluator_equals_naive(model_and_batch):
    model, loader, x, y = model_and_batch
    evaluator, out = _records(model, loader, [CHEAP], trust=False)
    records = out['records']
    ensembles = build_perturbations([CHEAP])
    naive = ensembles[0].sweep(model.fused_logits, x, y,
                               model.input_spaces(),
                               [e.eps for e in ensembles], nested=False)
    for e, res in zip(ensembles, naive.results):
        got = [r['preds'][e.name] for r in records]
        assert got == res.logits.argmax(1).tolist()
        assert [r['ensemble'][e.name]['broken_by'] for r in records] == \
            res.broken_by
    # One independent run at the smallest budget is the same as the sweep.
    alone = ensembles[0].predict(model.fused_logits, x, y,
                                 model.input_spaces()).argmax(1).tolist()
    assert alone == [r['preds'][ensembles[0].name] for r in records]
    accs = [out['metrics'][f'robust/{e.name}'] for e in ensembles]
    assert accs == sorted(accs, reverse=True)


def test_evaluator_runs_each_sweep_once(model_and_batch, monkeypatch):
    model, loader, _, _ = model_and_batch
    calls = []
    original = MultiModalAutoAttack.sweep

    def spy(self, *args, **kwargs):
        calls.append(len(kwargs.get('budgets') or args[4]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MultiModalAutoAttack, 'sweep', spy)
    _records(model, loader, [CHEAP, dict(CHEAP, modality='visual')],
             trust=False)
    assert calls == [3, 3]  # one batch, two sweeps of three budgets


def test_subset_is_content_seeded_and_reported(model_and_batch):
    model, loader, x, y = model_and_batch
    mask = subset_mask(x, dict(size=5, seed=0), 10)
    assert mask.tolist() == subset_mask(
        {m: t.flip(0) for m, t in x.items()}, dict(size=5, seed=0),
        10).flip(0).tolist()  # order-free
    assert subset_mask(x, None, 10).all()
    with pytest.raises(ValueError, match='subset.size'):
        check_subset(dict(size=0))
    with pytest.raises(ValueError, match='unknown keys'):
        check_subset(dict(size=3, fraction=0.1))
    pgd = dict(type='UniModalPGD', modality='audio', eps=0.2)
    _, out = _records(model, loader, [CHEAP, pgd],
                      subset=dict(size=5, seed=0), trust=False)
    records = out['records']
    inside = [r['subset'] for r in records]
    assert inside == mask.tolist()
    name = build_perturbations([CHEAP])[0].name
    for r, keep in zip(records, inside):
        assert (r['preds'][name] is None) == (not keep)
        assert r['preds']['pgd_audio@0.2'] is not None
    hits = [r['preds'][name] == r['label'] for r in records if r['subset']]
    assert out['metrics'][f'robust/{name}'] == pytest.approx(
        sum(hits) / len(hits))


def test_subset_scope_attacks_covers_reference_attacks(model_and_batch):
    """scope='attacks': PGD, FGM and worst cases over them run on the same
    clips as the ensemble, with the same outcome there as on every clip;
    missing modality and noise still see every clip."""
    model, loader, x, _ = model_and_batch
    mask = subset_mask(x, dict(size=5, seed=0), 10).tolist()
    with pytest.raises(ValueError, match='subset.scope'):
        check_subset(dict(size=5, scope='everything'))
    others = [dict(type='UniModalPGD', modality='audio', eps=0.2),
              dict(type='UniModalFGM', modality='audio', eps=0.2),
              dict(type='MissingModality', modality='audio'),
              dict(type='GaussianNoise', modality='audio', sigma=0.1)]
    _, full = _records(model, loader, others, trust=False)
    out = RobustEvaluator(
        model, [CHEAP] + others, trust=False,
        subset=dict(size=5, seed=0, scope='attacks')).run(
            loader, RobustAccMetric(worst_case='auto'))
    assert out['protocol']['subset']['scope'] == 'attacks'
    for name in ('pgd_audio@0.2', 'fgm_audio@0.2'):
        for r, f, keep in zip(out['records'], full['records'], mask):
            assert r['preds'][name] == (f['preds'][name] if keep else None)
    for name in ('missing_audio', 'noise_audio@0.1'):
        assert all(r['preds'][name] is not None for r in out['records'])
    worst = [r['preds']['pgd_audio@0.2'] == r['label'] and
             r['preds']['fgm_audio@0.2'] == r['label']
             for r, keep in zip(out['records'], mask) if keep]
    assert out['metrics']['robust/worst_audio@0.2'] == pytest.approx(
        sum(worst) / len(worst))


@pytest.mark.slow
def test_report_has_protocol_trust_and_per_attack(avdigits_tiny, tmp_path):
    runner = robust_runner(avdigits_tiny, tmp_path, [
        CHEAP, dict(type='UniModalPGD', modality='audio', eps=[0.05, 0.2])],
        indices=6, batch_size=3, subset=dict(size=4, seed=1),
        trust=dict(large_steps=3))
    runner.test()
    report = json.load(open(osp.join(str(tmp_path), 'robustness.json')))
    proto = report['protocol']
    assert proto['num_samples'] == 6
    assert proto['subset']['size'] == 4 and proto['subset']['seed'] == 1
    assert proto['seeds']['subset'] == 1
    aa = next(a for a in proto['attacks']
              if a['type'] == 'MultiModalAutoAttack')
    assert [m['steps'] for m in aa['members']] == [3, 3, None]
    assert aa['members'][2]['queries'] == 10
    assert aa['norm'] == 'L2'
    entry = next(p for p in report['perturbations']
                 if p['type'] == 'MultiModalAutoAttack')
    assert [a['name'].split('_')[0] for a in entry['per_attack']] == \
        ['apgd-ce', 'apgd-t', 'square']
    assert entry['per_attack'][-1]['robust_accuracy'] == pytest.approx(
        entry['accuracy'])
    checks = report['trust']['checks']
    for key in ('vanishing_gradient_ce_audio', 'vanishing_gradient_margin_'
                'visual', 'deterministic_forward', 'gradient_free_only',
                'monotone_in_eps'):
        assert checks[key]['status'] in ('pass', 'fail')
    assert any(k.startswith('large_budget_apgd-ce_audio@8.0')
               for k in checks)
    assert checks['deterministic_forward']['status'] == 'pass'
    md = open(osp.join(str(tmp_path), 'robustness.md')).read()
    assert '### Protocol' in md and '### Trust checks' in md
    assert '**subsample**' in md


def test_trust_and_subset_arguments_are_checked(model_and_batch):
    model, _, _, _ = model_and_batch
    with pytest.raises(ValueError, match='trust: unknown keys'):
        RobustEvaluator(model, [CHEAP], trust=dict(factor=3))
    with pytest.raises(ValueError, match='subset must be'):
        RobustEvaluator(model, [CHEAP], subset=5)
