"""RobustEvaluator and its small parts: model state, certify config,
progress lines, the model contract, and a whole pass without a loop."""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from crmt_mm.evaluation import EvalProgressHook, RobustEvaluator
from crmt_mm.evaluation.certify_config import check_certify
from crmt_mm.evaluation.contract import check_model, missing_requirements
from crmt_mm.evaluation.model_state import capture_features, eval_mode
from crmt_mm.evaluation.progress import Progress, format_seconds
from helpers import tiny_config
from helpers_eval import log_text, robust_runner


def test_eval_mode_restores_every_flag_on_error():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1),
                                torch.nn.BatchNorm2d(1))
    model.train()
    model[1].eval()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError
    assert [m.training for m in model.modules()] == [True, True, False]


def test_capture_features_removes_its_hooks():
    model = torch.nn.Module()
    model.encoders = torch.nn.ModuleDict(dict(a=torch.nn.Linear(2, 3)))
    with capture_features(model) as feats:
        model.encoders['a'](torch.ones(1, 2))
    assert feats['a'].shape == (1, 3)
    assert not model.encoders['a']._forward_hooks
    with capture_features(torch.nn.Linear(1, 1)) as feats:  # no encoders
        assert feats == {}


def test_certify_defaults_and_errors():
    l2 = dict(norm='L2', eps=1.0)
    descs = [dict(kind='pgd', unit='normalized', budget=0.5, settings=l2),
             dict(kind='pgd', unit='raw', budget=3.0, settings=l2),
             dict(kind='apgd-ce', unit='normalized', budget=0.7,
                  settings=dict(norm='Linf', eps=0.7)),
             dict(kind='noise', unit='normalized', budget=0.1,
                  settings=dict(sigma=0.1))]
    cfg = check_certify(dict(), descs)
    assert cfg['radii'] == [0.0, 0.5]  # 0 and the normalised L2 budgets
    assert (cfg['tau_source'], cfg['tau_data']) == ('model', 'train')
    assert check_certify(None, descs) is None
    for bad, match in ((dict(radius=1), 'unknown keys'),
                       (dict(radii=[]), 'non-empty'),
                       (dict(radii=[float('nan')]), 'finite'),
                       (dict(tau_source='x'), 'tau_source'),
                       (dict(tau_data=3), 'tau_data'),
                       (dict(tau_max_batches=0), 'tau_max_batches')):
        with pytest.raises(ValueError, match=match):
            check_certify(bad, descs)


def test_progress_cadence_and_eta():
    now = [0.0]
    progress = Progress(25, clock=lambda: now[0])
    due = []
    for done in range(1, 26):
        now[0] += 1.0
        if progress.due(done):
            due.append(done)
    assert due == [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25]
    assert progress.line(5) == '[5/25] 25.0s elapsed, ETA 1:40'
    slow = Progress(100, every=50, seconds=3, clock=lambda: now[0])
    now[0] += 3.5
    assert slow.due(2)  # silent for longer than `seconds`
    assert format_seconds(3725) == '1:02:05'
    with pytest.raises(ValueError, match='every'):
        Progress(3, every=0)
    with pytest.raises(TypeError, match='every'):
        EvalProgressHook(evry=2)


class Bare(torch.nn.Module):
    modalities = ('a',)


def test_contract_names_what_is_missing_and_why():
    with pytest.raises(TypeError, match='fused_logits') as err:
        check_model(Bare(), None, 'RobustTestLoop')
    assert 'RobustMMRecognizer3D' in str(err.value)
    cert = dict(tau_source='model')
    assert set(missing_requirements(Bare(), cert)) >= {
        'integration_weights', 'bias', 'tau', 'modality_logits'}
    assert 'tau' not in missing_requirements(Bare(),
                                             dict(tau_source='estimate'))


def test_run_without_a_loop_equals_the_loop(avdigits_tiny, tmp_path):
    """The hook-facing ``run`` gives the loop's metrics and records."""
    attacks = [dict(type='UniModalFGM', modality='audio', eps=0.5),
               dict(type='MissingModality', modality='visual')]
    certify = dict(tau_source='estimate', tau_data='self')
    runner = robust_runner(avdigits_tiny, tmp_path / 'loop', attacks,
                           certify=certify,
                           evaluator=[dict(type='RobustAccMetric')])
    expected = runner.test()
    loader = Runner.build_dataloader(runner.cfg.test_dataloader)
    model = runner.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logger = MMLogger.get_instance('robust_evaluator_test', log_level='INFO')
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    evaluator = RobustEvaluator(model, attacks, certify, logger=logger)
    assert evaluator.needs_tau_data
    result = evaluator.run(loader, tau_loader=loader, tau_data='test',
                           run_info=dict(world_size=1))
    assert result['metrics'] == expected
    assert len(result['records']) == 7
    assert result['protocol']['certification']['tau']['num_samples'] == 7
    assert result['protocol']['run']['model'] == 'CRMTRecognizer'
    assert all(torch.equal(before[k], v)
               for k, v in model.state_dict().items())
    text = '\n'.join(lines)  # progress lines with ETA
    assert 'robust test [1/3]' in text and 'robust test [3/3]' in text
    assert 'ETA' in text and 'tau ESTIMATED AT EVALUATION TIME' in text
    with pytest.raises(ValueError, match='nothing to evaluate'):
        RobustEvaluator(model, [])
    with pytest.raises(ValueError, match='log_interval'):
        RobustEvaluator(model, attacks, log_interval=0)


def test_eval_progress_hook_on_a_plain_test_loop(avdigits_tiny, tmp_path):
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path),
                      log_level='INFO')
    cfg.test_dataloader.dataset.indices = 3
    cfg.test_dataloader.batch_size = 1
    cfg.custom_hooks = [dict(type='EvalProgressHook')]
    cfg.test_cfg = dict(type='TestLoop')
    cfg.test_evaluator = dict(type='AccMetric')
    runner = Runner.from_cfg(cfg)
    runner.test()
    text = log_text(runner)
    assert 'test [1/3]' in text and 'test [3/3]' in text and 'ETA' in text


def test_tau_data_train_needs_a_train_dataloader():
    from types import SimpleNamespace

    from mmengine.config import Config

    from crmt_mm.evaluation import check_tau_data
    runner = SimpleNamespace(cfg=Config(dict()))
    check_tau_data(runner, None)
    check_tau_data(runner, dict(tau_source='model', tau_data='train'))
    with pytest.raises(ValueError, match="tau_data='train' needs"):
        check_tau_data(runner, dict(tau_source='estimate', tau_data='train'))
