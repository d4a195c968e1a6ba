"""Reliability: pre-emption and resume, atomic and safe checkpoints, and a
clear error for each bad input (``docs/reliability.md``).

The pre-emption tests SIGKILL a real ``tools/train.py`` process. It parks
itself at the kill point with :class:`KillPointHook` (the child imports this
module through ``custom_imports``; importing it only registers the hook),
which makes every kill land exactly where intended instead of racing a
timer.
"""
import glob
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmaction.registry import HOOKS
from mmaction.structures import ActionDataSample
from mmengine.hooks import Hook, checkpoint_hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, save_checkpoint

from crmt_mm.compat import TRUST_ENV, safe_torch_load
from crmt_mm.engine.hooks.phase_switch_hook import unwrap
from crmt_mm.models.recognizers.crmt_recognizer import NonFiniteLossError
from helpers import ROOT, free_port, load_tool, tiny_config

TESTS = osp.dirname(osp.abspath(__file__))
#: Epochs [0, SWITCH) are step 1, [SWITCH, MAX_EPOCHS) step 2.
SWITCH, MAX_EPOCHS = 2, 4
#: Kill point -> KillPointHook arguments and the epoch of the checkpoint
#: that --resume must then pick up.
KILL_POINTS = {
    'mid_step1': (dict(point='iter', epoch=1), 1),
    # ABOVE_NORMAL: wrap the model before CRMTPhaseSwitchHook (NORMAL)
    # estimates tau in the same before_train_epoch.
    'tau_estimation': (dict(point='tau', epoch=SWITCH,
                            priority='ABOVE_NORMAL'), SWITCH),
    # BELOW_NORMAL: after the switch hook has estimated tau and frozen.
    'after_switch': (dict(point='epoch', epoch=SWITCH,
                          priority='BELOW_NORMAL'), SWITCH),
    'mid_step2': (dict(point='iter', epoch=SWITCH + 1), SWITCH + 1),
}


@HOOKS.register_module(force=True)
class KillPointHook(Hook):
    """Test-only: parks a training process at one point until it is killed.

    At the point it writes its pid to ``marker`` and sleeps; the test waits
    for the marker and sends SIGKILL.

    Args:
        point (str): ``'iter'``: after iteration ``batch_idx`` of ``epoch``;
            ``'epoch'``: in ``before_train_epoch`` of ``epoch`` (where
            exactly depends on the hook priority); ``'tau'``: inside the tau
            estimation of the switch at ``epoch``, at the second call of
            ``model.modality_logits`` (the function tau is estimated on).
        epoch (int): The epoch of the point.
        marker (str): File written when the point is reached.
        batch_idx (int): Iteration of ``'iter'``. Defaults to 1.
    """

    def __init__(self, point: str, epoch: int, marker: str,
                 batch_idx: int = 1) -> None:
        self.point = point
        self.epoch = epoch
        self.marker = marker
        self.batch_idx = batch_idx

    def _park(self) -> None:
        with open(self.marker, 'w') as f:
            f.write(str(os.getpid()))
        time.sleep(600)

    def before_train_epoch(self, runner) -> None:
        if runner.epoch != self.epoch:
            return
        if self.point == 'epoch':
            self._park()
        elif self.point == 'tau':
            model = unwrap(runner.model)
            logits, calls = model.modality_logits, []

            def park_at_second_batch(x):
                calls.append(x)
                if len(calls) == 2:
                    self._park()
                return logits(x)

            model.modality_logits = park_at_second_batch

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self.point == 'iter' and runner.epoch == self.epoch and \
                batch_idx == self.batch_idx:
            self._park()


class TrainProcess:
    """``tools/train.py CONFIG --work-dir WORK_DIR [args]`` in a subprocess,
    or ``tools/dist_train.sh`` with that many gloo ``processes``.

    One thread per process keeps the arithmetic identical between runs (and
    lets two runs share the two CPU cores); the trust flag is removed so
    every load goes through the safe loader.
    """

    def __init__(self, config: str, work_dir: str, *args: str,
                 processes: int = 1) -> None:
        env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
                   PORT=str(free_port()),
                   PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
        env.pop(TRUST_ENV, None)
        command = [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
                   config] if processes == 1 else [
                       'bash', osp.join(ROOT, 'tools', 'dist_train.sh'),
                       config, str(processes)]
        self.work_dir = work_dir
        self.log = work_dir + '.log'
        with open(self.log, 'a') as log:
            self.process = subprocess.Popen(
                command + ['--work-dir', work_dir, *args], env=env,
                stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        with open(self.log) as f:
            return f.read()[-3000:]

    def wait(self) -> None:
        try:
            self.process.wait(timeout=300)
        finally:
            self.process.kill()  # no-op unless the wait timed out
        assert self.process.returncode == 0, self.output()

    def kill_at(self, marker: str) -> None:
        """SIGKILL the process once it has parked at ``marker`` (and in any
        case, so that a failed wait leaves no parked process behind)."""
        deadline = time.monotonic() + 180
        try:
            while not osp.exists(marker):
                assert self.process.poll() is None, self.output()
                assert time.monotonic() < deadline, 'kill point not reached'
                time.sleep(0.05)
        finally:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        assert self.process.returncode == -signal.SIGKILL


def write_run_config(path: str, data_root: str, probe=None) -> str:
    """The CRMT demo config on tiny data, optionally with a kill point."""
    cfg = tiny_config('crmt_avdigits.py', data_root, osp.dirname(path),
                      train_cfg=dict(max_epochs=MAX_EPOCHS,
                                     val_interval=MAX_EPOCHS))
    cfg.custom_hooks[0].switch_epoch = SWITCH
    if probe is not None:
        cfg.custom_imports.imports.append('test_reliability')
        cfg.custom_hooks.append(dict(type='KillPointHook', **probe))
    cfg.dump(path)
    return path


def val_metrics(work_dir: str) -> dict:
    """The validation metrics logged at the end of training."""
    records = []
    for path in glob.glob(osp.join(work_dir, '*', 'vis_data',
                                   'scalars.json')):
        with open(path) as f:
            records += [json.loads(line) for line in f]
    final = [r for r in records if 'acc/fused_top1' in r]
    assert len(final) == 1, final
    return {k: v for k, v in final[0].items() if k.startswith('acc/')}


def checkpoint(work_dir: str, epoch: int) -> dict:
    return safe_torch_load(osp.join(work_dir, f'epoch_{epoch}.pth'))


@pytest.fixture(scope='module')
def uninterrupted(avdigits_tiny, tmp_path_factory):
    """The reference run, started at once; ``.wait()`` before reading it."""
    root = tmp_path_factory.mktemp('uninterrupted')
    config = write_run_config(str(root / 'run.py'), avdigits_tiny)
    return TrainProcess(config, str(root / 'work'))


@pytest.mark.parametrize('name', [
    pytest.param('mid_step1', marks=pytest.mark.slow),
    'tau_estimation',
    pytest.param('after_switch', marks=pytest.mark.slow),
    pytest.param('mid_step2', marks=pytest.mark.slow)])
def test_sigkill_and_resume_match_uninterrupted_run(
        avdigits_tiny, tmp_path, uninterrupted, monkeypatch, name):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    probe, resume_epoch = KILL_POINTS[name]
    marker = str(tmp_path / 'parked')
    work_dir = str(tmp_path / 'work')
    killed = write_run_config(str(tmp_path / 'killed.py'), avdigits_tiny,
                              dict(probe, marker=marker))
    TrainProcess(killed, work_dir).kill_at(marker)

    # The pointer names the newest checkpoint, and every checkpoint on
    # disk is complete and consistent: phase 1 with tau = 0 up to the
    # switch, phase 2 with tau > 0 after it.
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read() == osp.join(work_dir, f'epoch_{resume_epoch}.pth')
    for epoch in range(1, resume_epoch + 1):
        state = checkpoint(work_dir, epoch)['state_dict']
        assert int(state['phase']) == (2 if epoch > SWITCH else 1)
        assert bool((state['tau'] > 0).all()) == (epoch > SWITCH)
    assert not glob.glob(osp.join(work_dir, f'epoch_{resume_epoch + 1}*'))

    config = write_run_config(str(tmp_path / 'run.py'), avdigits_tiny)
    TrainProcess(config, work_dir, '--resume').wait()
    uninterrupted.wait()
    reference = uninterrupted.work_dir
    want = checkpoint(reference, MAX_EPOCHS)
    got = checkpoint(work_dir, MAX_EPOCHS)
    assert got['meta']['epoch'] == want['meta']['epoch'] == MAX_EPOCHS
    assert sorted(got['state_dict']) == sorted(want['state_dict'])
    for key, value in want['state_dict'].items():
        assert torch.equal(got['state_dict'][key], value), key
    assert int(got['state_dict']['phase']) == 2
    assert (got['state_dict']['tau'] > 0).all()
    assert val_metrics(work_dir) == val_metrics(reference)
    assert not glob.glob(osp.join(work_dir, '.*.tmp'))


@pytest.mark.slow
def test_tau_of_two_gloo_processes_equals_one_process(avdigits_tiny,
                                                      tmp_path):
    """Step 2 from epoch 0: tau is estimated on the same initial weights by
    one process (batch 16) and by two (8 each, all-reduced with max)."""
    runs = []
    for processes, batch_size in ((1, 16), (2, 8)):
        config = str(tmp_path / f'{processes}.py')
        cfg = tiny_config('crmt_avdigits.py', avdigits_tiny,
                          str(tmp_path), train_cfg=dict(max_epochs=1))
        cfg.custom_hooks[0].switch_epoch = 0
        cfg.train_dataloader.batch_size = batch_size
        cfg.dump(config)
        runs.append(TrainProcess(config, str(tmp_path / f'{processes}'),
                                 processes=processes))
    for run in runs:
        run.wait()
    single, ddp = (checkpoint(run.work_dir, 1)['state_dict']['tau']
                   for run in runs)
    assert (single > 0).all()
    assert torch.allclose(single, ddp, rtol=1e-6, atol=0)


# ---- atomic checkpoints -----------------------------------------------------


def test_failed_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    """A crash between writing and renaming (here os.replace fails) leaves
    the previous epoch_N.pth and last_checkpoint intact, with no debris."""
    path = str(tmp_path / 'epoch_1.pth')
    pointer = str(tmp_path / 'last_checkpoint')
    save_checkpoint({'step': 1}, path)
    # The checkpoint hook's own `open`, as it writes last_checkpoint.
    with checkpoint_hook.open(pointer, 'w') as f:
        f.write(path)

    def crash(src, dst):
        raise OSError('simulated crash before the rename')

    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(OSError, match='simulated'):
        save_checkpoint({'step': 2}, path)
    with pytest.raises(OSError, match='simulated'):
        with checkpoint_hook.open(pointer, 'w') as f:
            f.write('elsewhere')
    monkeypatch.undo()
    assert safe_torch_load(path) == {'step': 1}
    with open(pointer) as f:
        assert f.read() == path
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth', 'last_checkpoint']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


SAVE_FOREVER = """
import itertools, sys, torch
import crmt_mm.compat
from mmengine.runner.checkpoint import save_checkpoint
for step in itertools.count():
    save_checkpoint({'step': step, 'w': torch.full((1 << 23,), step)},
                    sys.argv[1])
"""


def test_sigkill_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """A process saving 64 MB checkpoints in a loop is SIGKILLed while a
    save is being written (its temporary file exists): the checkpoint on
    disk still loads and is one whole earlier save."""
    path = str(tmp_path / 'epoch_1.pth')
    process = subprocess.Popen([sys.executable, '-c', SAVE_FOREVER, path],
                               env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 120
    while not (osp.exists(path) and glob.glob(str(tmp_path / '.*.tmp'))):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = safe_torch_load(path)
    assert saved['w'].numel() == 1 << 23
    assert (saved['w'] == saved['step']).all()


# ---- checkpoint safety ------------------------------------------------------


@pytest.fixture(scope='module')
def trained(avdigits_tiny, tmp_path_factory):
    """The work dir of a one-epoch CRMT step-1 run (``epoch_1.pth``)."""
    work_dir = str(tmp_path_factory.mktemp('trained'))
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, work_dir,
                      train_cfg=dict(max_epochs=1), custom_hooks=[])
    Runner.from_cfg(cfg).train()
    return work_dir


def crmt_runner(data_root, work_dir, max_epochs=2, switch=1, **options):
    cfg = tiny_config('crmt_avdigits.py', data_root, work_dir,
                      train_cfg=dict(max_epochs=max_epochs), **options)
    cfg.custom_hooks[0].switch_epoch = switch
    return Runner.from_cfg(cfg)


class Payload:
    """Unpickling it runs ``touch <marker>``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def test_malicious_checkpoint_is_refused(avdigits_tiny, tmp_path,
                                         monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(state_dict={}, meta=Payload(str(marker))), path)
    runner = crmt_runner(avdigits_tiny, str(tmp_path / 'work'))
    for load in (CheckpointLoader.load_checkpoint, runner.load_checkpoint,
                 runner.resume):
        with pytest.raises(RuntimeError, match=f'Refusing to load checkpoint'
                           f'.*{TRUST_ENV}=1'):
            load(path)
        assert not marker.exists()
    # The flag is what lets code in a file run: only for trusted files.
    monkeypatch.setenv(TRUST_ENV, '1')
    CheckpointLoader.load_checkpoint(path)
    assert marker.exists()


def test_stock_mmengine_checkpoint_needs_the_trust_flag(trained, tmp_path,
                                                        monkeypatch):
    """Without crmt_mm's pickling fix, HistoryBuffer pickles its statistics
    functions (via getattr), which the safe loader refuses; the flag
    loads it. Checkpoints written by crmt_mm runs load without the flag
    (the resume tests above, the trained fixture here)."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    ours = safe_torch_load(osp.join(trained, 'epoch_1.pth'))
    assert any(isinstance(v, HistoryBuffer)
               for v in ours['message_hub']['log_scalars'].values())
    path = str(tmp_path / 'stock.pth')
    with monkeypatch.context() as patch:
        # mmengine's own HistoryBuffer.__getstate__, which compat replaces.
        patch.setattr(HistoryBuffer, '__getstate__', lambda self: dict(
            self.__dict__, statistics_methods=self._statistics_methods))
        torch.save(ours, path)
    with pytest.raises(RuntimeError, match=f'{TRUST_ENV}=1'):
        safe_torch_load(path)
    monkeypatch.setenv(TRUST_ENV, '1')
    stock = safe_torch_load(path)
    assert stock['meta']['epoch'] == ours['meta']['epoch'] == 1


def edit_checkpoint(source, target, edit):
    checkpoint = safe_torch_load(source)
    edit(checkpoint['state_dict'])
    torch.save(checkpoint, target)
    return target


def rename_modality(state):
    for key in [k for k in state if k.startswith('encoders.visual.')]:
        state[key.replace('visual', 'rgb', 1)] = state.pop(key)


@pytest.mark.parametrize('flag', ['load_from', '--resume'])
@pytest.mark.parametrize('edit, match', [
    (lambda state: state.update(
        {k: v[:5] for k, v in state.items() if k.startswith('head.')}),
     r"head\.fc\.weight: checkpoint \(5, 128\) vs model \(10, 128\)"),
    (rename_modality,
     r"Missing keys: \['encoders\.visual\..*unexpected keys: "
     r"\['encoders\.rgb\.")], ids=['num_classes', 'modalities'])
def test_checkpoint_of_another_model_names_the_keys(avdigits_tiny, trained,
                                                    tmp_path, flag, edit,
                                                    match):
    """Another number of classes or other modalities: load_from and
    tools/train.py --resume fail before training, naming the keys."""
    path = edit_checkpoint(osp.join(trained, 'epoch_1.pth'),
                           str(tmp_path / 'other.pth'), edit)
    config = str(tmp_path / 'crmt.py')
    write_run_config(config, avdigits_tiny)
    tool = load_tool('train')
    args = [config, '--work-dir', str(tmp_path / 'work')]
    args += ['--resume', path] if flag == '--resume' else [
        '--cfg-options', f'load_from={path}']
    cfg = tool.merge_args(tool.Config.fromfile(config),
                          tool.parse_args(args))
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=match):
        runner.train()
    assert runner.iter == 0


def test_checkpoint_without_crmt_buffers_still_loads(avdigits_tiny, trained,
                                                     tmp_path):
    """Checkpoints from before ``phase``/``tau`` existed keep the model's
    defaults (phase 1, tau unknown) for those buffers."""
    path = edit_checkpoint(
        osp.join(trained, 'epoch_1.pth'), str(tmp_path / 'old.pth'),
        lambda state: [state.pop(k) for k in ('phase', 'tau')])
    runner = crmt_runner(avdigits_tiny, str(tmp_path / 'work'))
    runner.load_checkpoint(path)
    assert int(runner.model.phase) == 1 and not runner.model.tau.any()


# ---- bad inputs -------------------------------------------------------------


def test_non_finite_input_names_modality_positions_and_clips(avdigits_tiny,
                                                             tmp_path):
    """NaN/Inf that appears after loading (here a zero std in the
    normaliser; NaN in a feature file is refused earlier by LoadCRMTAudio,
    see test_datasets.py) is refused before the loss."""
    cfg = crmt_runner(avdigits_tiny, str(tmp_path)).cfg
    cfg.model.data_preprocessor.preprocessors.imgs.std = [0.0] * 3
    # The prepared-data check would refuse the zero std before training;
    # this test is about what reaches the model.
    cfg.default_hooks.pop('norm_check')
    cfg.train_dataloader.dataset.pipeline[-1].meta_keys = ('frame_dir', )
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError) as info:
        runner.train()
    message = str(info.value)
    assert ("modality 'visual' (imgs) has NaN/Inf values in 8 of 8 "
            'samples, at batch positions [0, 1, 2, 3, 4] (clips [') in message
    assert osp.join(avdigits_tiny, 'rawframes', 'train', 'train_') in message
    assert 'zero std in the data_preprocessor' in message


def test_inf_input_without_clip_ids_says_how_to_get_them(avdigits_tiny,
                                                         tmp_path):
    model = crmt_runner(avdigits_tiny, str(tmp_path)).model
    inputs = dict(imgs=torch.zeros(3, 1, 3, 3, 32, 32),
                  audios=torch.zeros(3, 1, 1, 64, 64))
    inputs['imgs'][2, 0, 1, 0, 4, 4] = float('inf')
    samples = [ActionDataSample().set_gt_label(0) for _ in range(3)]
    with pytest.raises(ValueError, match=r"modality 'visual' \(imgs\) has "
                       r'NaN/Inf values in 1 of 3 samples, at batch '
                       r"positions \[2\] \(clip ids unknown: add "
                       r"'frame_dir' to PackActionInputs"):
        model(inputs, samples, mode='loss')


class PoisonLossHook(Hook):
    """Makes the margin term infinite (rho = inf) from ``epoch`` on."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def before_train_epoch(self, runner) -> None:
        if runner.epoch == self.epoch:
            unwrap(runner.model).loss_module.rho = float('inf')


def test_non_finite_loss_stops_training_keeps_last_good_checkpoint(
        avdigits_tiny, tmp_path):
    work_dir = str(tmp_path)
    runner = crmt_runner(avdigits_tiny, work_dir, max_epochs=3, switch=2)
    runner.register_hook(PoisonLossHook(epoch=1))
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    good = osp.join(work_dir, 'epoch_1.pth')
    message = str(info.value)
    assert ("non-finite loss {'loss_margin': inf} at iteration 4 (epoch 1"
            in message)
    assert f'Last good checkpoint: {good}' in message
    assert '--resume' in message
    assert glob.glob(osp.join(work_dir, 'epoch_*.pth')) == [good]
    # The failing step updated nothing; the checkpoint is whole and resumes.
    state = safe_torch_load(good)['state_dict']
    for name, param in runner.model.named_parameters():
        assert torch.equal(param, state[name]), name
    resumed = crmt_runner(avdigits_tiny, work_dir, max_epochs=3, switch=2,
                          resume=True)
    resumed.load_or_resume()
    assert resumed.epoch == 1
    assert all(bool(torch.isfinite(v).all()) for v in state.values())


def unknown_key(cls, key, meant):
    return (rf"{cls}: unknown config key\(s\) \['{key}'\] \(did you mean "
            rf"'{meant}'\?\); allowed keys: \[.*'{meant}'")


#: (config key, bad value, where it fails, error type, message pattern).
BAD_CONFIGS = [
    # misspelled keys of every CRMT module
    ('model.competiter', 'min', 'build', TypeError,
     unknown_key('CRMTRecognizer', 'competiter', 'competitor')),
    ('model.encoders.audio.feat_dims', 64, 'build', ValueError,
     'encoders.audio: ' + unknown_key('ModalityEncoder', 'feat_dims',
                                      'feat_dim')),
    ('model.head.init_integraton', 0.1, 'build', TypeError,
     unknown_key('CRMTHead', 'init_integraton', 'init_integration')),
    ('model.loss.rh', 2.0, 'build', TypeError,
     unknown_key('CRMTMarginLoss', 'rh', 'rho')),
    ('custom_hooks.0.lr_fator', 1.0, 'build', TypeError,
     unknown_key('CRMTPhaseSwitchHook', 'lr_fator', 'lr_factor')),
    ('train_cfg.phase2mode', 'cached', 'train', TypeError,
     unknown_key('CRMTTrainLoop', 'phase2mode', 'phase2_mode')),
    ('test_cfg.perturbation', [], 'test', TypeError,
     unknown_key('RobustTestLoop', 'perturbation', 'perturbations')),
    # invalid hyper-parameters (switch_epoch >= max_epochs: test_training)
    ('model.loss.rho', -1.0, 'build', ValueError,
     'rho must be >= 0, got -1.0'),
    ('model.loss.at_eps', -0.5, 'build', ValueError,
     r"\['at_eps'\] moved.*train_perturbation"),
    ('custom_hooks.0.lr_factor', -1.0, 'build', ValueError,
     'lr_factor must be >= 0, got -1.0'),
    ('custom_hooks.0.switch_epoch', -1, 'build', ValueError,
     'switch_epoch must be an integer >= 0, got -1'),
    # modality names that do not match each other or the data
    ('model.encoders.audio.input_key', 'audio', 'build', ValueError,
     r"preprocessors has no entry for the input keys \['audio'\] of the "
     r"encoders \(it has \['audios', 'imgs'\]\)"),
    ('model.input_ranges', dict(depth=(0, 1)), 'build', ValueError,
     r"input_ranges names unknown modalities \['depth'\]; the model has "
     r"\['audio', 'visual'\]"),
    ('train_dataloader.dataset.pipeline.4.collect_keys', ('imgs', ), 'train',
     ValueError, r"the data provides inputs \['imgs'\] but the model "
     r"expects \['audios', 'imgs'\].*collect_keys"),
]


@pytest.mark.parametrize('key, value, stage, error, match', BAD_CONFIGS,
                         ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_fails_with_a_message_naming_key_and_fix(
        avdigits_tiny, tmp_path, key, value, stage, error, match):
    """'build' errors come from Runner.from_cfg; loop errors from
    runner.train()/test() as they build the loop; the data mismatch at the
    first batch."""
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path))
    cfg.merge_from_dict({key: value})
    with pytest.raises(error, match=match):
        runner = Runner.from_cfg(cfg)
        if stage != 'build':
            getattr(runner, stage)()
