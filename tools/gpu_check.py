"""One-command GPU check: every crmt_mm measurement that needs CUDA.

Runs, each as a subprocess with its own time limit inside one overall
budget (default 450 s, under 8 minutes on one GPU), and writes ONE JSON:

1. ``cuda_tests``: ``pytest -m cuda tests/test_cuda.py`` (tau loop against
   batched, tau on a loader, PGD, training steps with and without AMP);
2. ``train_amp``: ``tools/train.py configs/crmt_avdigits.py --amp`` for
   ~50 step-1 iterations of CRMT-JT (batch 25, one epoch), then the switch
   (tau with ``tau_class_chunk='auto'``) and one cached step-2 epoch;
3. ``robust_eval``: ``tools/test.py`` with the robust evaluation of that
   checkpoint on CUDA;
4. ``bench_avdigits`` and ``bench_resnet18``: ``tools/benchmark.py
   --device cuda --quick`` for both models; their ``tau_batched_vs_loop*``
   keys are the CUDA tau loop-against-batched measurement, copied to the
   top-level ``tau_batched_vs_loop``.

Without CUDA every step is recorded as skipped with the reason, and the
command still exits 0, so the same line works everywhere:

    bash tools/gpu_check.sh --out work_dirs/gpu_check.json
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STEPS = ('cuda_tests', 'train_amp', 'robust_eval', 'bench_avdigits',
         'bench_resnet18')
#: Seconds each step may take at most (the overall budget also applies).
STEP_LIMITS = dict(cuda_tests=120, train_amp=150, robust_eval=120,
                   bench_avdigits=180, bench_resnet18=180)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='crmt_mm GPU check')
    parser.add_argument('--out', default=osp.join(ROOT, 'work_dirs',
                                                  'gpu_check.json'))
    parser.add_argument('--steps', default=','.join(STEPS),
                        help=f'comma-separated subset of {",".join(STEPS)}')
    parser.add_argument('--budget', type=float, default=450.0,
                        help='overall seconds for all steps')
    parser.add_argument('--work-dir', default=None,
                        help='scratch directory (default: a temp dir)')
    args = parser.parse_args(argv)
    args.steps = [s for s in args.steps.split(',') if s]
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f'unknown --steps {unknown}; choose from {list(STEPS)}')
    return args


def run(cmd, limit, env):
    """rc, wall seconds and the last lines of a subprocess's output."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=limit,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        rc, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as error:
        rc = 'timeout'
        output = error.stdout or ''
        output = output.decode() if isinstance(output, bytes) else output
    tail = output.strip().splitlines()[-15:]
    return dict(cmd=' '.join(cmd), rc=rc,
                status='ok' if rc == 0 else 'failed',
                seconds=round(time.perf_counter() - start, 1), tail=tail)


def avdigits_options(root, keys):
    """``--cfg-options`` pointing the AV-Digits loaders ``keys`` (a subset
    of train/val/test) at ``root``."""
    options = []
    splits = dict(train='train', val='test', test='test')
    for key, split in ((f'{k}_dataloader', splits[k]) for k in keys):
        options += [
            f'{key}.dataset.ann_file={root}/avdigits_{split}.txt',
            f'{key}.dataset.data_prefix.img={root}/rawframes/{split}',
            f'{key}.dataset.data_prefix.audio={root}/audio/{split}']
    return options


def build_commands(work, py=sys.executable):
    """The command line of every step, with scratch files under ``work``."""
    data = osp.join(work, 'avdigits')
    train_dir = osp.join(work, 'train_amp')
    return dict(
        cuda_tests=[py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                    '-m', 'cuda', 'tests/test_cuda.py'],
        train_amp=[py, 'tools/train.py', 'configs/crmt_avdigits.py',
                   '--amp', '--no-validate', '--work-dir', train_dir,
                   '--cfg-options', 'train_cfg.max_epochs=2',
                   'train_dataloader.batch_size=25',
                   'custom_hooks.0.switch_epoch=1',
                   'custom_hooks.0.tau_class_chunk=auto',
                   'default_hooks.checkpoint.interval=1',
                   *avdigits_options(data, ('train', ))],
        robust_eval=[py, 'tools/test.py', 'configs/crmt_avdigits.py',
                     osp.join(train_dir, 'epoch_2.pth'), '--work-dir',
                     osp.join(work, 'robust_eval'), '--cfg-options',
                     *avdigits_options(data, ('train', 'test'))],
        bench_avdigits=[py, 'tools/benchmark.py', '--device', 'cuda',
                        '--quick', '--out', osp.join(work, 'bench_avd.json')],
        bench_resnet18=[py, 'tools/benchmark.py', '--device', 'cuda',
                        '--quick', '--model', 'resnet18', '--out',
                        osp.join(work, 'bench_r18.json')])


def main(argv=None):
    args = parse_args(argv)
    import torch
    cuda = torch.cuda.is_available()
    result = dict(cuda=cuda, torch=torch.__version__,
                  device=torch.cuda.get_device_name(0) if cuda else None,
                  started=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                  steps={})
    if not cuda:
        reason = ('no CUDA device (torch.cuda.is_available() is False): '
                  'GPU parts skipped')
        print(f'gpu_check: {reason}', flush=True)
        result['steps'] = {s: dict(status='skipped', reason=reason)
                           for s in args.steps}
        return write(result, args.out)
    work = args.work_dir or tempfile.mkdtemp(prefix='crmt_gpu_check_')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    py = sys.executable
    deadline = time.perf_counter() + args.budget
    data = osp.join(work, 'avdigits')
    commands = build_commands(work, py)
    if {'train_amp', 'robust_eval'} & set(args.steps):
        from crmt_mm.data_prep.avdigits import prepare_avdigits
        prepare_avdigits(data, seed=0)
    for step in args.steps:
        left = deadline - time.perf_counter()
        if left < 10:
            result['steps'][step] = dict(status='skipped',
                                         reason='overall --budget spent')
            continue
        print(f'gpu_check: {step} ...', flush=True)
        entry = run(commands[step], min(STEP_LIMITS[step], left), env)
        if step.startswith('bench_'):
            path = commands[step][-1]
            if osp.exists(path):
                with open(path) as f:
                    entry['result'] = json.load(f)
        result['steps'][step] = entry
        print(f'gpu_check: {step} {entry["status"]} in {entry["seconds"]}s',
              flush=True)
    result['tau_batched_vs_loop'] = {
        step: {k: v for k, v in entry['result'].items()
               if k.startswith(('tau_batched', 'tau_loop'))}
        for step, entry in result['steps'].items() if 'result' in entry}
    return write(result, args.out)


def write(result, out):
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(result, f, indent=2)
    failed = [s for s, e in result['steps'].items()
              if e['status'] == 'failed']
    print(f'gpu_check: wrote {out}'
          + (f'; FAILED: {failed}' if failed else ''), flush=True)
    return result


if __name__ == '__main__':
    sys.exit(1 if any(e['status'] == 'failed' for e in
                      main()['steps'].values()) else 0)
