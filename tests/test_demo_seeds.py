"""tools/demo.py's multi-seed aggregation and resume logic on fake runs."""
import json

import pytest
from mmengine.config import Config

from helpers import load_tool

demo = load_tool('demo')
EPS = [0.5, 1.0, 2.0, 4.0]


def _report(clean, strong_audio, strong_visual, labels, audio_correct):
    """A fake robustness report: metrics and per-clip records."""
    metrics = {'robust/clean': clean, 'robust/missing_audio': 0.2,
               'robust/missing_visual': 0.6}
    for eps, a, v in zip(EPS, strong_audio, strong_visual):
        metrics[f'robust/aa-fast_audio@{eps}'] = a
        metrics[f'robust/aa-fast_visual@{eps}'] = v
    name = 'aa-fast_audio@2.0'
    records = [dict(label=t, preds={'clean': t, name: t if ok else -1,
                                    'aa-fast_visual@2.0': t})
               for t, ok in zip(labels, audio_correct)]
    return dict(metrics=metrics, records=records, perturbations=[
        dict(type='MultiModalAutoAttack', kind='aa-fast')])


def _runs():
    labels = list(range(10))
    return {
        0: dict(jt=_report(1.0, [0.8, 0.6, 0.4, 0.1], [0.9] * 4, labels,
                           [1] * 4 + [0] * 6),
                crmt=_report(0.99, [0.9, 0.8, 0.7, 0.5], [0.9] * 4, labels,
                             [1] * 7 + [0] * 3)),
        1: dict(jt=_report(1.0, [0.8, 0.5, 0.3, 0.1], [0.9] * 4, labels,
                           [1] * 3 + [0] * 7),
                crmt=_report(0.97, [0.9, 0.8, 0.45, 0.5], [0.9] * 4,
                             labels, [1] * 4 + [0] * 6)),
    }


def test_choose_budget_uses_the_strong_worst_case():
    jt = _runs()[0]['jt']
    assert demo.choose_budget(jt) == ('audio', 2.0)


def test_aggregate_mean_min_max_checks_and_bootstrap():
    out = demo.aggregate(_runs(), 'audio')
    assert out['budget'] == 2.0  # seed 0: 2.0 (0.4 <= 0.5), seed 1: 1.0
    assert out['mean']['jt']['strong_audio'] == pytest.approx(0.35)
    assert out['min']['crmt']['strong_audio'] == 0.45
    assert out['max']['crmt']['clean'] == 0.99
    assert out['per_seed'][0]['checks'][
        'crmt_at_least_10_points_more_under_attack']
    # seed 1: CRMT's clean accuracy is 3 points lower than JT's
    assert not out['per_seed'][1]['checks']['crmt_clean_within_2_points']
    assert not out['all_seeds_hold']
    d = out['difference']['strong_audio']
    assert d['mean'] == pytest.approx(((7 - 4) + (4 - 3)) / 20)
    assert d['low'] <= d['mean'] <= d['high']
    assert (d['seeds'], d['clips']) == (2, 10)
    table = demo.seeds_table(out)
    assert 'CRMT - JT' in table and 'strong_audio' in table


def test_finished_training_is_reused_only_with_the_same_config(tmp_path):
    cfg = Config(dict(work_dir=str(tmp_path), a=1))
    assert demo.finished_checkpoint(cfg) is None
    ckpt = tmp_path / 'epoch_3.pth'
    ckpt.write_bytes(b'')
    with open(tmp_path / demo.STAMP, 'w') as f:
        json.dump(dict(config=demo.training_text(cfg),
                       checkpoint=str(ckpt)), f)
    assert demo.finished_checkpoint(cfg) == str(ckpt)
    # Another evaluation does not invalidate the training.
    evaluated = Config(dict(work_dir=str(tmp_path), a=1,
                            test_cfg=dict(type='RobustTestLoop')))
    assert demo.finished_checkpoint(evaluated) == str(ckpt)
    other = Config(dict(work_dir=str(tmp_path), a=2))
    with pytest.raises(RuntimeError, match='another config'):
        demo.finished_checkpoint(other)
    ckpt.unlink()  # stamp without its checkpoint: train again
    assert demo.finished_checkpoint(cfg) is None


def test_seed_flags():
    assert demo.parse_args([]).seeds == [0]
    assert demo.parse_args(['--seeds', '0', '1', '2']).seeds == [0, 1, 2]
    with pytest.raises(SystemExit):
        demo.parse_args(['--seed', '0', '--seeds', '1'])


def test_configure_sets_the_demo_protocol(tmp_path):
    """The demo's evaluation: reference budgets 1, 2, 4 (joint 1), the
    strong sweep 1, 2, 4 on audio and 4 on visual, no strong joint attack,
    every attack on the seeded subsample, 8 smoothing clips, the reduced
    ensemble."""
    args = demo.parse_args(['--work-dir', str(tmp_path)])
    cfg = demo.configure('configs/crmt_avdigits.py', str(tmp_path / 'crmt'),
                         0, args)
    assert cfg.test_cfg.subset == dict(size=32, seed=0, scope='attacks')
    strong = {}
    for p in cfg.test_cfg.perturbations:
        if p['type'] == 'MultiModalAutoAttack':
            assert (p['version'], p['steps'], p['n_targets'],
                    p['queries']) == ('fast', 10, 3, 100)
            strong[p.get('modality')] = p['eps']
        elif isinstance(p.get('eps'), list):
            assert p['eps'] == ([1.0] if p.get('modality') is None
                                else [1.0, 2.0, 4.0])
    assert strong == dict(audio=[1.0, 2.0, 4.0], visual=[4.0])
    assert [(s['subset']['size'], s['radii'])
            for s in cfg.test_cfg.smoothing] == [(8, [0.0, 0.25, 0.5])]
    assert cfg.randomness.seed == 0


def test_weakest_modality_is_the_per_clip_minimum():
    """strong_weakest counts the clips that survive the strong attack on
    both modalities (brute force over the fake records)."""
    runs = _runs()
    jt = runs[0]['jt']
    jt['records'][0]['preds']['aa-fast_visual@2.0'] = -1  # clip 0 breaks
    column = demo.weakest_correct(jt, 2.0)
    brute = [int(r['preds']['aa-fast_audio@2.0'] == r['label'] and
                 r['preds']['aa-fast_visual@2.0'] == r['label'])
             for r in jt['records']]
    assert column == brute == [0, 1, 1, 1] + [0] * 6
    out = demo.aggregate(runs, 'audio')
    assert out['per_seed'][0]['jt']['strong_weakest'] == 0.3
    assert out['difference']['strong_weakest']['mean'] == pytest.approx(
        ((7 - 3) + (4 - 3)) / 20)
    ci = out['interval']['crmt']['clean']
    assert ci['low'] <= ci['mean'] <= ci['high']
    assert 'strong_weakest' in demo.seeds_table(out)


def test_fsdd_mnist_options_and_protocol(tmp_path):
    with pytest.raises(SystemExit):
        demo.parse_args(['--dataset', 'fsdd_mnist'])  # needs --fsdd/--mnist
    with pytest.raises(SystemExit):
        demo.parse_args(['--pairs', 'mmat:crmt_at'])  # AV-Digits: JT/CRMT
    args = demo.parse_args([
        '--dataset', 'fsdd_mnist', '--fsdd', 'F', '--mnist', 'M',
        '--split', 'speaker', '--test-speakers', 'theo', '--pairs',
        'jt:crmt', 'mixup:crmt_mix', '--work-dir', str(tmp_path)])
    assert args.data_root == 'data/fsdd_mnist_speaker_theo'
    assert args.models == ['jt', 'crmt', 'mixup', 'crmt_mix']
    assert args.strong_subset == 128
    args.data_root = str(tmp_path / 'data')
    (tmp_path / 'data').mkdir()
    with open(tmp_path / 'data' / 'fsdd_mnist_norm.json', 'w') as f:
        json.dump(dict(visual=dict(mean=40.0, std=50.0)), f)
    cfg = demo.configure(demo.config_of('crmt', 'fsdd_mnist'),
                         str(tmp_path / 'crmt'), 1, args)
    assert cfg.val_dataloader.dataset.ann_file.endswith('fsdd_mnist_val.txt')
    assert cfg.test_dataloader.dataset.ann_file.endswith(
        'fsdd_mnist_test.txt')
    imgs = cfg.model.data_preprocessor.preprocessors.imgs
    assert (imgs.mean, imgs.std) == ([40.0] * 3, [50.0] * 3)
    strong = {p.get('modality'): p['eps'] for p in cfg.test_cfg.perturbations
              if p['type'] == 'MultiModalAutoAttack'}
    assert strong == dict(audio=[1.0, 2.0, 4.0], visual=[1.0, 2.0, 4.0])
    assert cfg.test_cfg.subset['size'] == 128
