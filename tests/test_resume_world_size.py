"""Resume across world sizes (docs/reliability.md, section 9).

A checkpoint written by a 2-process run (2 x 8 samples per step) resumes
with 1 process (1 x 16), and the reverse, from a step-1 checkpoint
(``epoch_1.pth``: the mid-step-1 point of the 4-epoch run switching at
epoch 2) and from a step-2 checkpoint (``epoch_3.pth``: mid-step-2). Each
resumed run is compared with the uninterrupted run that wrote its
checkpoint. A resume that would change the effective batch is refused.
"""
import os
import os.path as osp
import shutil
from types import SimpleNamespace

import pytest
import torch

from crmt_mm.engine.hooks import ResumeWorldSizeHook
from helpers import tiny_config
from test_reliability import (MAX_EPOCHS, SWITCH, TrainProcess, checkpoint,
                              val_metrics)

#: Samples per optimizer step of every run here: 2 x 8 or 1 x 16.
GLOBAL_BATCH = 16
#: Tolerances of a resumed run against the uninterrupted run that wrote
#: its checkpoint (measured values: docs/reliability.md, section 9).
#: Integration weights a: max |a - a_ref| at most A_REL times the distance
#: the uninterrupted run itself moved a after the checkpoint,
#: max |a_ref - a_checkpoint| (measured ratios 0.25 to 0.5).
A_REL = 1.0
#: Step-1 checkpoint: max relative tau difference (measured 1.6 %).
TAU_RTOL_STEP1 = 0.1
#: Validation accuracies (10 test clips: one clip is 0.1).
ACC_ATOL = 0.1


class Logger:
    def __init__(self):
        self.lines = []

    def info(self, line):
        self.lines.append(('info', line))

    def warning(self, line):
        self.lines.append(('warning', line))


def fake_runner(world_size, batch_size, resume=True):
    return SimpleNamespace(
        world_size=world_size, _resume=resume, logger=Logger(),
        _train_loop=SimpleNamespace(
            dataloader=SimpleNamespace(batch_size=batch_size)))


def test_hook_records_and_checks_the_effective_batch():
    hook = ResumeWorldSizeHook()
    checkpoint = dict(meta=dict(epoch=1))
    hook.before_save_checkpoint(fake_runner(2, 8), checkpoint)
    assert checkpoint['meta'] == dict(epoch=1, world_size=2,
                                      train_batch_size=8)
    # Same run shape: silent. Same effective batch: a warning.
    for world, batch, lines in ((2, 8, 0), (1, 16, 1), (4, 4, 1)):
        runner = fake_runner(world, batch)
        hook.after_load_checkpoint(runner, checkpoint)
        assert len(runner.logger.lines) == lines
        assert all(kind == 'warning' and 'not a replay' in line
                   for kind, line in runner.logger.lines)
    # Another effective batch: refused, with the batch size to use.
    for world, batch, fix in ((1, 8, 'train_dataloader.batch_size=16'),
                              (2, 16, 'train_dataloader.batch_size=8'),
                              (3, 8, 'resume with 2 process(es)')):
        with pytest.raises(RuntimeError, match=r'2 process\(es\) x batch '
                           r'size 8 = 16 samples per step') as error:
            hook.after_load_checkpoint(fake_runner(world, batch), checkpoint)
        assert fix in str(error.value)
    # load_from (not a resume) and checkpoints without the record.
    hook.after_load_checkpoint(fake_runner(1, 8, resume=False), checkpoint)
    runner = fake_runner(1, 8)
    hook.after_load_checkpoint(runner, dict(meta=dict(epoch=1)))
    assert runner.logger.lines[0][0] == 'info'


def write_config(path: str, data_root: str, processes: int) -> str:
    cfg = tiny_config('crmt_avdigits.py', data_root, osp.dirname(path),
                      train_cfg=dict(max_epochs=MAX_EPOCHS,
                                     val_interval=MAX_EPOCHS))
    cfg.custom_hooks[0].switch_epoch = SWITCH
    cfg.train_dataloader.batch_size = GLOBAL_BATCH // processes
    cfg.dump(path)
    return path


@pytest.fixture(scope='module')
def uninterrupted(avdigits_tiny, tmp_path_factory):
    """{processes: work dir} of the two uninterrupted runs."""
    root = tmp_path_factory.mktemp('uninterrupted_ws')
    runs = {n: TrainProcess(write_config(str(root / f'{n}.py'),
                                         avdigits_tiny, n),
                            str(root / f'work{n}'), processes=n)
            for n in (2, 1)}
    for run in runs.values():
        run.wait()
    return {n: run.work_dir for n, run in runs.items()}


def start_resume(root, data_root, source_dir, epoch, processes, *args):
    """Resume a copy of ``source_dir``'s ``epoch_<epoch>.pth`` in a fresh
    work dir with ``processes`` processes."""
    work = str(root / f'resume_{processes}_{epoch}')
    shutil.rmtree(work, ignore_errors=True)
    ckpt = osp.join(work, f'epoch_{epoch}.pth')
    os.makedirs(work)
    shutil.copy(osp.join(source_dir, f'epoch_{epoch}.pth'), ckpt)
    config = write_config(str(root / f'resume_{processes}_{epoch}.py'),
                          data_root, processes)
    return TrainProcess(config, work, '--resume', ckpt, *args,
                        processes=processes)


def compare(got_dir: str, ref_dir: str, epoch: int) -> dict:
    """Check what must be equal; return the differences that may not be."""
    got = checkpoint(got_dir, MAX_EPOCHS)
    ref = checkpoint(ref_dir, MAX_EPOCHS)
    start = checkpoint(ref_dir, epoch)['state_dict']['head.integration']
    assert got['meta']['epoch'] == ref['meta']['epoch'] == MAX_EPOCHS
    assert got['meta']['iter'] == ref['meta']['iter']
    got_sd, ref_sd = got['state_dict'], ref['state_dict']
    assert sorted(got_sd) == sorted(ref_sd)
    assert int(got_sd['phase']) == int(ref_sd['phase']) == 2
    assert (got_sd['tau'] > 0).all()
    assert torch.equal(got_sd['model_identity'], ref_sd['model_identity'])
    if epoch > SWITCH:
        # Step-2 checkpoint: tau, encoders, classifier and BatchNorm
        # statistics are frozen since the switch, so bit-identical; only
        # the integration weights a are trained after the resume.
        for key, value in ref_sd.items():
            if key != 'head.integration':
                assert torch.equal(got_sd[key], value), key
    got_acc, ref_acc = val_metrics(got_dir), val_metrics(ref_dir)
    assert got_acc.keys() == ref_acc.keys()
    return dict(
        tau_rel=float(((got_sd['tau'] - ref_sd['tau']).abs() /
                       ref_sd['tau']).max()),
        a_abs=float((got_sd['head.integration'] -
                     ref_sd['head.integration']).abs().max()),
        a_moved=float((ref_sd['head.integration'] - start).abs().max()),
        acc_abs=max(abs(got_acc[k] - ref_acc[k]) for k in ref_acc),
        acc=got_acc['acc/fused_top1'], acc_ref=ref_acc['acc/fused_top1'],
        tau_ref=float(ref_sd['tau'].max()),
        a_ref=(float(ref_sd['head.integration'].min()),
               float(ref_sd['head.integration'].max())))


@pytest.mark.slow
def test_resume_across_world_sizes(avdigits_tiny, tmp_path, uninterrupted):
    """2 -> 1 and 1 -> 2 processes at epoch 1 (step 1) and epoch 3 (step 2);
    16 samples per step throughout."""
    results = {}
    for epoch in (1, SWITCH + 1):
        runs = {(source, 3 - source): start_resume(
            tmp_path, avdigits_tiny, uninterrupted[source], epoch,
            3 - source) for source in (2, 1)}
        for (source, target), run in runs.items():
            run.wait()
            log = run.output()
            assert 'is not a replay of an uninterrupted run' in log, log
            results[(source, target, epoch)] = compare(
                run.work_dir, uninterrupted[source], epoch)
    print('\n'.join(f'{s} -> {t} processes from epoch_{e}.pth: {r}'
                    for (s, t, e), r in sorted(results.items())))
    for (source, target, epoch), diff in results.items():
        if epoch > SWITCH:  # tau is the checkpoint's
            assert diff['tau_rel'] == 0, diff
        else:  # tau is estimated after the resume
            assert diff['tau_rel'] <= TAU_RTOL_STEP1, diff
        assert diff['a_abs'] <= A_REL * diff['a_moved'], diff
        assert diff['acc_abs'] <= ACC_ATOL, diff


@pytest.mark.slow
def test_resume_that_changes_the_effective_batch_is_refused(
        avdigits_tiny, tmp_path, uninterrupted):
    """1 process with batch 8 from a 2 x 8 checkpoint: refused before any
    training, naming both effective batches and the batch size to use."""
    run = start_resume(tmp_path, avdigits_tiny, uninterrupted[2], 1, 1,
                       '--cfg-options', 'train_dataloader.batch_size=8')
    run.process.wait(timeout=300)
    log = run.output()
    assert run.process.returncode != 0, log
    assert ('trained with 2 process(es) x batch size 8 = 16 samples per '
            'step; this run has 1 x 8 = 8') in log, log
    assert 'train_dataloader.batch_size=16' in log, log
    assert not osp.exists(osp.join(run.work_dir, 'epoch_2.pth'))
