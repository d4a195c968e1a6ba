"""Side-by-side cost ratios of CRMT against joint training (issue: perf).

Every goal is a *ratio* of two timings taken in the same run, on the same
model, batch and thread count, interleaved (A, B, A, B, ...) so that load
changes on a shared machine hit both sides; each side's time is the median
over repeats. Absolute times are printed for orientation only.

    python tools/benchmark.py --quick --out bench.json   # < 5 min, 2 cores
    python tools/benchmark.py --model resnet18 --out bench_r18.json

Ratios written to ``--out`` (JSON):

- ``crmt_vs_jt_iter``: CRMT-JT step-1 iteration / JT iteration (goal <= 1.05)
- ``at_vs_ideal_iter``: CRMT-AT iteration / ((k + 1) x JT iteration)
- ``tau_speedup``: the reference's tau algorithm (one forward per batch,
  then per class ``.backward(retain_graph=True)`` of the fused logit,
  parameter gradients filled) / crmt_mm's ``estimate_tau`` (one forward,
  input-only VJPs) (goal >= 2 on CPU: that is the limit of input-only VJPs
  against full backwards); ``tau_max_abs_diff`` checks crmt_mm against the
  correct per-class, per-modality definition
- ``tau_batched_vs_loop``: ``estimate_tau(class_chunk=C)`` (C one-hot
  cotangents per ``is_grads_batched`` backward) / the per-class loop, best
  of ``--tau-chunks`` (< 1 means batching helps; per-C keys too)
- ``cost_model``: per-sample unit costs (JT / CRMT step, eval forward,
  tau forward + input-VJP) and the whole-run CRMT-over-JT overhead for KS
  (K = 31) and VGGSound (K = 309) at 140 + 45 epochs, by tau fraction
- ``phase2_vs_phase1_epoch``: step-2 epoch on cached logits / step-1 epoch
  (goal <= 0.1); ``phase2_streaming_vs_phase1_epoch`` for the streaming mode
- ``pgd_vs_ideal``: L2 PGD evaluation with k steps / ((k + 1) x one
  forward+backward) (goal <= 1.15)
- ``peak_mem_ratio``: the largest of the step-1 / tau / PGD peak memory
  over the JT iteration's (goal <= 1.3); each measured in its own process
- ``loader_vs_train_throughput``: AV-Digits loader samples/s over the
  model's training samples/s (>= 1 means loading does not starve training)
- ``strong_eval_vs_naive`` (``--strong-eval on|only``): the 'standard'
  AutoAttack-style ensemble over the demo's budget grid, survivor-only and
  nested, over every member on every clip at every budget (goal <= 0.4,
  identical per-sample outcomes asserted); plus
  ``strong_standard_s_per_1000_clips_<model>``
- ``smoothing_vs_forward`` (``--smoothing``, only this block): noisy copies/s
  of randomized-smoothing CERTIFY over samples/s of the plain batched
  forward (goal >= 0.8); ``smoothing_cached_vs_forward`` the same with the
  clean branch fixed once per clip (``LateFusionForward``, what the
  evaluation uses; above 1 because only the noised branch runs per copy);
  and the seconds per clip at n = 1,000 (``--smoothing-clip-n``, cached),
  extrapolated to n = 100,000
"""
import argparse
import json
import multiprocessing as mp
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

MODEL_CHOICES = ('avdigits', 'resnet18')
#: Where models and batches live; ``--device cuda`` on a GPU machine.
DEVICE = torch.device('cpu')
AT_STEPS = 5
PGD_STEPS = 4


# ---------------------------------------------------------------- set-up
def build_model(kind: str, head: str, variant: str = 'JT', rho: float = 2.0):
    """A recognizer of the demo (AV-Digits) or the KS architecture."""
    import crmt_mm  # noqa: F401
    from mmaction.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmaction')
    if kind == 'avdigits':
        cfg = Config.fromfile(osp.join(ROOT, 'configs/crmt_avdigits.py'))
        num_classes = 10
    else:
        cfg = Config.fromfile(osp.join(ROOT, 'configs/crmt_ks.py'))
        num_classes = 31
        # ResNet-18 x 2 at a reduced, CPU-friendly input size.
        cfg.model.encoders.visual.input_shape = (3, 3, 64, 64)
        cfg.model.encoders.audio.input_shape = (1, 256, 64)
    model_cfg = cfg.model
    model_cfg.pop('data_preprocessor')
    if head == 'concat':
        model_cfg.head = dict(type='ConcatHead', num_classes=num_classes)
        rho = 0.0
    model_cfg.loss.update(rho=rho)
    if variant == 'AT':  # the CRMT-AT configs' attack, AT_STEPS steps
        model_cfg.train_perturbation = dict(type='MultiModalPGD', eps=0.1,
                                            steps=AT_STEPS)
    torch.manual_seed(0)
    return MODELS.build(model_cfg).to(DEVICE)


def make_batch(model, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn((batch, 1) + e.input_shape, generator=g)
         for m, e in model.encoders.items()}
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    return {m: v.to(DEVICE) for m, v in x.items()}, y.to(DEVICE)


def synchronize():
    """Wait for queued GPU kernels so that wall-clock timings are real."""
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize()


def train_step(model, optimizer, x, y):
    losses = model._phase1_loss(x, y)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def forward_backward_inputs(model, x, y):
    """One plain forward + backward w.r.t. the inputs (an attack step)."""
    with torch.enable_grad():
        xs = {m: v.detach().requires_grad_(True) for m, v in x.items()}
        loss = torch.nn.functional.cross_entropy(model.fused_logits(xs), y)
        torch.autograd.grad(loss, list(xs.values()))


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each callable, run round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


# ---------------------------------------------------------------- goals
def bench_iterations(kind, batch, repeats):
    jt = build_model(kind, 'concat')
    crmt = build_model(kind, 'crmt')
    at = build_model(kind, 'crmt', variant='AT')
    x, y = make_batch(jt, batch)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
            for k, m in (('jt', jt), ('crmt', crmt), ('at', at))}
    for m in (jt, crmt, at):
        m.train()
    t = interleaved(dict(
        jt=lambda: train_step(jt, opts['jt'], x, y),
        crmt=lambda: train_step(crmt, opts['crmt'], x, y),
        at=lambda: train_step(at, opts['at'], x, y)), repeats)
    return dict(jt_iter_s=t['jt'], crmt_iter_s=t['crmt'], at_iter_s=t['at'],
                crmt_vs_jt_iter=t['crmt'] / t['jt'],
                at_vs_ideal_iter=t['at'] / ((AT_STEPS + 1) * t['jt']))


def tau_reference_style(model, batches):
    """The reference's algorithm (``get_lip``): per batch one forward, then
    per class a ``.backward(retain_graph=True)`` of the batch-summed fused
    logit h_k, which fills every parameter gradient, and the per-sample
    norms of the input gradients. Its three bugs are not reproduced (input
    gradients are cleared per class, both rows are read, and the norm is
    divided by a_k^(m) to give tau of z); the cost is the same."""
    a = model.integration_weights().detach()
    tau = torch.zeros_like(a)
    for x in batches:
        xs = {m: v.detach().requires_grad_(True) for m, v in x.items()}
        fused = model.fused_logits(xs)
        for k in range(model.num_classes):
            fused[:, k].sum().backward(retain_graph=k < model.num_classes - 1)
            for i, m in enumerate(model.modalities):
                norms = xs[m].grad.flatten(1).norm(dim=1) / a[i, k]
                tau[i, k] = torch.maximum(tau[i, k], norms.max())
                xs[m].grad = None
    model.zero_grad(set_to_none=True)
    return tau


def tau_per_modality_naive(model, batches):
    """The definition, literally: per class and modality, one backward."""
    tau = torch.zeros(len(model.modalities), model.num_classes,
                      device=DEVICE)
    for x in batches:
        for k in range(model.num_classes):
            for i, m in enumerate(model.modalities):
                xs = {n: v.detach().requires_grad_(True)
                      for n, v in x.items()}
                z = model.modality_logits(xs)[m][:, k].sum()
                grad, = torch.autograd.grad(z, xs[m])
                tau[i, k] = torch.maximum(
                    tau[i, k], grad.flatten(1).norm(dim=1).max())
    return tau


def bench_tau(kind, batch, num_batches, repeats):
    from crmt_mm.certification import estimate_tau
    model = build_model(kind, 'crmt').eval()
    with torch.no_grad():  # a > 0 so the reference's division is defined
        model.head.integration.uniform_(0.5, 1.5)
    batches = [make_batch(model, batch, seed)[0]
               for seed in range(num_batches)]

    def ours():
        return estimate_tau(model.modality_logits, batches, model.modalities,
                            model.num_classes)['tau']

    t = interleaved(dict(reference=lambda: tau_reference_style(model,
                                                               batches),
                         ours=ours), repeats, warmup=0)
    diff = (ours() - tau_per_modality_naive(model, batches)).abs().max()
    samples = batch * num_batches
    rate = samples / t['ours']
    ks_seconds = 20715 / rate * (31 / model.num_classes)
    return dict(tau_reference_s=t['reference'], tau_ours_s=t['ours'],
                tau_speedup=t['reference'] / t['ours'],
                tau_max_abs_diff=float(diff),
                tau_samples_per_s=rate,
                tau_ks_full_estimate_s=ks_seconds)


def bench_tau_batched(kind, batch, num_batches, repeats, chunks):
    """``estimate_tau`` with C classes per batched backward against the
    per-class loop (``tau_batched_vs_loop_c{C}`` = batched / loop time, < 1
    is faster; ``tau_batched_vs_loop`` the best C) and the largest relative
    difference of the two estimates."""
    from crmt_mm.certification import estimate_tau
    model = build_model(kind, 'crmt').eval()
    batches = [make_batch(model, batch, seed)[0]
               for seed in range(num_batches)]
    chunks = sorted({min(c, model.num_classes) for c in chunks if c > 1})

    def run(chunk):
        return estimate_tau(model.modality_logits, batches, model.modalities,
                            model.num_classes, class_chunk=chunk)['tau']

    fns = dict(loop=lambda: run(None))
    fns.update({f'c{c}': (lambda c=c: run(c)) for c in chunks})
    t = interleaved(fns, repeats, warmup=1)
    loop = run(None)
    out = dict(tau_loop_s=t['loop'])
    for c in chunks:
        rel = ((run(c) - loop).abs() / loop.abs().clamp_min(1e-30)).max()
        out[f'tau_batched_c{c}_s'] = t[f'c{c}']
        out[f'tau_batched_vs_loop_c{c}'] = t[f'c{c}'] / t['loop']
        out[f'tau_batched_max_rel_diff_c{c}'] = float(rel)
    out['tau_batched_vs_loop'] = min(
        out[f'tau_batched_vs_loop_c{c}'] for c in chunks)
    return out


#: Whole-run settings of the cost model: (training clips, K, step-1 epochs,
#: step-2 epochs); the paper's schedule, VGGSound with the KS schedule.
RUNS = dict(ks=(20715, 31, 140, 45), vggsound=(183730, 309, 140, 45))
TAU_FRACTIONS = (1.0, 0.25, 0.1, 0.05, 0.01)


def bench_cost_model(kind, batch, repeats):
    """Per-sample unit costs and the whole-run CRMT / JT wall-time model.

    Units (seconds per sample, medians): a JT and a CRMT-JT training step,
    a no-grad eval forward (step 2's logit cache), and tau with the
    per-class loop, split into forward + K input-VJPs so that it can be
    scaled to another K. Whole run, evaluation excluded (the same for JT
    and CRMT, so leaving it out gives the largest relative overhead):
    JT = E1 N t_jt; CRMT = E1 N t_crmt + f N (t_graph_fwd + K t_vjp) +
    N t_fwd + E2 (cached step-2 epoch, measured as ~0 by ``phase2``).
    """
    from crmt_mm.certification import estimate_tau
    jt = build_model(kind, 'concat')
    crmt = build_model(kind, 'crmt')
    x, y = make_batch(crmt, batch)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
            for k, m in (('jt', jt), ('crmt', crmt))}

    def graph_forward():
        with torch.enable_grad():
            xs = {m: v.detach().requires_grad_(True) for m, v in x.items()}
            crmt.modality_logits(xs)

    def eval_forward():
        with torch.no_grad():
            crmt.modality_logits(x)

    def tau_loop():
        estimate_tau(crmt.modality_logits, [x], crmt.modalities,
                     crmt.num_classes)

    def train(name, model):
        model.train()
        train_step(model, opts[name], x, y)
        model.eval()

    crmt.eval()
    t = interleaved(dict(jt=lambda: train('jt', jt),
                         crmt=lambda: train('crmt', crmt),
                         graph=graph_forward, fwd=eval_forward,
                         tau=tau_loop), repeats)
    unit = {k: v / batch for k, v in t.items()}
    k_model = crmt.num_classes
    vjp = max(unit['tau'] - unit['graph'], 0.0) / k_model
    out = dict({f'unit_{k}_s_per_sample': v for k, v in unit.items()},
               unit_vjp_s_per_sample=vjp, cost_model={})
    for run, (clips, classes, e1, e2) in RUNS.items():
        jt_s = e1 * clips * unit['jt']
        base = e1 * clips * unit['crmt'] + clips * unit['fwd']
        tau_full = clips * (unit['graph'] + classes * vjp)
        rows = {str(f): dict(tau_epochs=f * tau_full / (clips * unit['jt']),
                             overhead=(base + f * tau_full) / jt_s - 1)
                for f in TAU_FRACTIONS}
        out['cost_model'][run] = dict(
            clips=clips, num_classes=classes, step1_epochs=e1,
            step2_epochs=e2, jt_hours=jt_s / 3600,
            step1_overhead=unit['crmt'] / unit['jt'] - 1,
            cache_epochs=unit['fwd'] / unit['jt'], by_tau_fraction=rows)
    return out


def bench_phase2(kind, batch, num_batches, repeats):
    model = build_model(kind, 'crmt')
    data = [make_batch(model, batch, seed) for seed in range(num_batches)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def phase1_epoch():
        model.train()
        for x, y in data:
            train_step(model, opt, x, y)

    model.eval()
    with torch.no_grad():
        cache = [(torch.stack(list(model.modality_logits(x).values())), y)
                 for x, y in data]
    model.tau.fill_(1.0)
    a_opt = torch.optim.SGD(model.integration_parameters(), lr=3e-5,
                            momentum=0.9, weight_decay=1e-2)

    def step2(z, y):
        loss = model.radius_loss(z, y)['loss_radius']
        a_opt.zero_grad()
        loss.backward()
        a_opt.step()

    def cached_epoch():
        for z, y in cache:
            step2(z, y)

    def streaming_epoch():
        for x, y in data:
            with torch.no_grad():
                z = torch.stack(list(model.modality_logits(x).values()))
            step2(z, y)

    t = interleaved(dict(p1=phase1_epoch, cached=cached_epoch,
                         streaming=streaming_epoch), repeats)
    return dict(phase1_epoch_s=t['p1'], phase2_cached_epoch_s=t['cached'],
                phase2_streaming_epoch_s=t['streaming'],
                phase2_vs_phase1_epoch=t['cached'] / t['p1'],
                phase2_streaming_vs_phase1_epoch=t['streaming'] / t['p1'])


def bench_pgd(kind, batch, repeats):
    from crmt_mm.attacks import UniModalPGD
    model = build_model(kind, 'crmt').eval()
    x, y = make_batch(model, batch)
    attack = UniModalPGD(model.modalities[-1], eps=1.0, steps=PGD_STEPS)

    def pgd():
        with torch.no_grad():  # as inside mmengine's evaluation loop
            attack.predict(model.fused_logits, x, y)

    t = interleaved(dict(fb=lambda: forward_backward_inputs(model, x, y),
                         pgd=pgd), repeats)
    return dict(fwd_bwd_s=t['fb'], pgd_s=t['pgd'],
                pgd_vs_ideal=t['pgd'] / ((PGD_STEPS + 1) * t['fb']))


# ---------------------------------------------------------------- memory
def _rss_kib() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


class _PeakSampler:
    """Highest resident memory seen by a 1 kHz sampling thread.

    CPU torch has no allocator statistics and ``ru_maxrss`` is a
    process-wide high-water mark that the imports already set, so the peak
    of one workload is sampled while it runs.
    """

    def __init__(self):
        import threading
        self.peak = _rss_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kib())
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kib())


def _peak_worker(kind, batch, task, queue):
    torch.set_num_threads(1)
    model = build_model(kind, 'crmt' if task != 'jt' else 'concat')
    x, y = make_batch(model, batch)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    base = _rss_kib()  # imports, model and data: common to every task
    with _PeakSampler() as sampler:
        if task in ('jt', 'crmt'):
            for _ in range(3):
                train_step(model, opt, x, y)
        elif task == 'tau':
            from crmt_mm.certification import estimate_tau
            model.eval()
            estimate_tau(model.modality_logits, [x], model.modalities,
                         model.num_classes)
        elif task == 'pgd':
            from crmt_mm.attacks import UniModalPGD
            model.eval()
            with torch.no_grad():
                UniModalPGD(model.modalities[-1], eps=1.0).predict(
                    model.fused_logits, x, y)
    queue.put(sampler.peak - base)


def bench_memory(kind, batch):
    """Peak resident memory (KiB) each workload adds to the process.

    Each workload runs in a fresh process; its peak is sampled while it runs
    and counted above the process's size after imports, model and batch
    were built (activations, gradients, optimizer state, autograd graph).
    """
    ctx = mp.get_context('spawn')
    peaks = {}
    for task in ('jt', 'crmt', 'tau', 'pgd'):
        queue = ctx.Queue()
        proc = ctx.Process(target=_peak_worker,
                           args=(kind, batch, task, queue))
        proc.start()
        peaks[task] = queue.get()
        proc.join()
    ratio = max(peaks[t] for t in ('crmt', 'tau', 'pgd')) / peaks['jt']
    return dict({f'peak_kib_{k}': v for k, v in peaks.items()},
                peak_mem_ratio=ratio)


# ---------------------------------------------------------------- loader
def _loader_rate(config: str, dataset_overrides: dict, batch: int) -> tuple:
    """Samples/s of ``config``'s training pipeline with its workers."""
    import crmt_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope('mmaction')
    cfg = Config.fromfile(osp.join(ROOT, config))
    loader_cfg = cfg.train_dataloader
    loader_cfg.dataset.update(dataset_overrides)
    loader_cfg.batch_size = batch
    loader_cfg.persistent_workers = False
    batches = iter(Runner.build_dataloader(loader_cfg))
    next(batches)  # worker start-up is paid once per run, not per batch
    start, count = time.perf_counter(), 0
    for data in batches:
        count += len(data['data_samples'])
    return count / (time.perf_counter() - start), loader_cfg.num_workers


def _ks_format_fixture(root: str, clips: int) -> dict:
    """Kinetics-Sounds-format clips: 10 JPEG frames of 256x340 (1 fps) and
    a [1024, 128] fbank feature each, as the prep tools write them."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    lines = []
    for index in range(clips):
        clip = f'clip_{index:04d}'
        os.makedirs(osp.join(root, 'rawframes', clip), exist_ok=True)
        for t in range(10):
            path = osp.join(root, 'rawframes', clip, f'img_{t + 1:05d}.jpg')
            if not osp.exists(path):
                cv2.imwrite(path, rng.integers(0, 256, (256, 340, 3),
                                               dtype=np.uint8))
        os.makedirs(osp.join(root, 'audio'), exist_ok=True)
        np.save(osp.join(root, 'audio', clip + '.npy'),
                rng.standard_normal((1024, 128)).astype(np.float32))
        lines.append(f'{clip} 10 {index % 31}\n')
    ann = osp.join(root, 'ks_train.txt')
    with open(ann, 'w') as f:
        f.writelines(lines)
    return dict(ann_file=ann, data_prefix=dict(
        img=osp.join(root, 'rawframes'), audio=osp.join(root, 'audio')))


def bench_loader(batch, train_samples_per_s, ks_clips=96):
    """Loader samples/s against the model's training samples/s."""
    from crmt_mm.data_prep.avdigits import prepare_avdigits
    root = osp.join(tempfile.gettempdir(), 'crmt_bench_avdigits')
    prepare_avdigits(root, seed=0)
    rate, workers = _loader_rate('configs/crmt_avdigits.py', dict(
        ann_file=osp.join(root, 'avdigits_train.txt'),
        data_prefix=dict(img=osp.join(root, 'rawframes', 'train'),
                         audio=osp.join(root, 'audio', 'train'))), batch)
    ks_root = osp.join(tempfile.gettempdir(), 'crmt_bench_ks')
    ks_rate, ks_workers = _loader_rate(
        'configs/crmt_ks.py', _ks_format_fixture(ks_root, ks_clips), 16)
    return dict(loader_samples_per_s=rate, loader_workers=workers,
                train_samples_per_s=train_samples_per_s,
                loader_vs_train_throughput=rate / train_samples_per_s,
                ks_loader_samples_per_s=ks_rate,
                ks_loader_workers=ks_workers)


# ------------------------------------------------ strong evaluation (AA)
#: The demo's budget grid (configs/_base_/evaluation/robust_avdigits.py).
STRONG_GRID = (0.5, 1.0, 2.0, 4.0)
#: ``--quick`` shrinks the ensemble (the scheduling ratio is what is
#: measured; per-clip costs always use the full 'standard' settings).
STRONG_QUICK = dict(steps=10, n_targets=2, queries=100)
#: Budget of the per-clip cost: small enough that no clip breaks.
STRONG_COST_EPS = 1e-3


def _strong_batch(kind, batch, seed=0):
    """A batch labelled with the model's own clean predictions, so every
    clip is attacked (an untrained model would otherwise be wrong on ~90%
    and the attacks would have nothing to do)."""
    model = build_model(kind, 'crmt').eval()
    x, _ = make_batch(model, batch, seed)
    with torch.no_grad():
        y = model.fused_logits(x).argmax(dim=1)
    return model, x, y


def bench_strong_eval(kind, batch, quick, grid_scale=1.0):
    """``strong_eval_vs_naive``: the ensemble over the demo's grid with
    survivor-only members and nested budgets, against every member on every
    clip at every budget; the per-sample outcomes must be identical."""
    from crmt_mm.attacks import MultiModalAutoAttack
    model, x, y = _strong_batch(kind, batch)
    settings = STRONG_QUICK if quick else {}
    grid = [e * grid_scale for e in STRONG_GRID]
    ensemble = MultiModalAutoAttack(grid[0], version='standard',
                                    modality=model.modalities[-1],
                                    **settings)
    runs = {}

    def sweep(nested):
        runs[nested] = ensemble.sweep(model.fused_logits, x, y, None, grid,
                                      nested=nested)

    t = interleaved(dict(nested=lambda: sweep(True),
                         naive=lambda: sweep(False)), repeats=1, warmup=0)
    a, b = runs[True], runs[False]
    # Per-sample outcome: the budget index at which a clip breaks and the
    # member that breaks it. Recorded (not raised) so that a float-level
    # difference between batch sizes is reported with its size.
    differ = sum(int(i != j) or int(p != q) for i, j, p, q in zip(
        a.break_index.tolist(), b.break_index.tolist(), a.broken_by,
        b.broken_by))
    identical = differ == 0
    if not identical:
        print(f'  strong_eval: {differ} clips differ between nested and '
              'naive sweeps', flush=True)
    return dict(strong_eval_differing_clips=differ,strong_eval_nested_s=t['nested'],
                strong_eval_naive_s=t['naive'],
                strong_eval_vs_naive=t['nested'] / t['naive'],
                strong_eval_identical=identical,
                strong_eval_accuracy=dict(zip(map(str, grid), a.accuracy)),
                strong_eval_settings=dict(
                    ensemble.describe(), members=None, budgets=grid,
                    grid_scale=grid_scale, clips=batch))


def bench_strong_cost(kind, clips, fraction):
    """Seconds per 1,000 clips of the 'standard' ensemble when every clip
    survives every member (its worst case: nothing stops early), from
    ``clips`` clips and ``fraction`` of its APGD steps and Square queries.

    A tiny budget keeps every clip robust, so each member does all of its
    work; the cost per step does not depend on the budget, so the time
    scales by 1 / fraction and linearly in clips. On a real model the cost
    is lower by roughly the fraction of clips broken early.
    """
    from crmt_mm.attacks import MultiModalAutoAttack
    model, x, y = _strong_batch(kind, clips, seed=1)
    ensemble = MultiModalAutoAttack(
        STRONG_COST_EPS, version='standard', modality=model.modalities[-1],
        steps=max(1, round(100 * fraction)),
        queries=max(2, round(5000 * fraction)))
    start = time.perf_counter()
    result = ensemble.run(model.fused_logits, x, y)
    seconds = time.perf_counter() - start
    return {f'strong_standard_s_per_1000_clips_{kind}':
            seconds / fraction / clips * 1000,
            f'strong_standard_clips_{kind}': clips,
            f'strong_standard_work_fraction_{kind}': fraction,
            f'strong_standard_accuracy_{kind}': result.accuracy}


# ---------------------------------------------------------- dataset scale
#: VGGSound-sized validation workload: clips and frames per clip.
SCALE_CLIPS = 200_000
SCALE_FRAMES = 10
SCALE_GOALS = dict(dataset_cold_per_rank_s=('<=', 60.0),
                   dataset_warm_s=('<=', 2.0))


def make_placeholder_dataset(root: str, clips: int,
                             frames: int = SCALE_FRAMES) -> dict:
    """An ``AudioVisualDataset`` layout of ``clips`` clips with ``frames``
    frames each; every frame is a hard link of one empty file and every
    audio file one of a single valid ``[64, 64]`` ``.npy``, so the tree costs
    directory entries, not disk. Reused when already complete."""
    import numpy as np
    paths = dict(ann_file=osp.join(root, 'list.txt'),
                 img=osp.join(root, 'rawframes'),
                 audio=osp.join(root, 'audio'))
    marker = osp.join(root, f'.complete_{clips}_{frames}')
    if osp.isfile(marker):
        return paths
    import shutil
    shutil.rmtree(root, ignore_errors=True)  # a partial tree from a kill
    os.makedirs(paths['img'])
    os.makedirs(paths['audio'])
    names = [f'img_{i:05d}.png' for i in range(1, frames + 1)]
    sources = {}
    # ext4 allows 65000 links per file: one source per 6000 clips.

    def source(kind: str, clip: int) -> str:
        path = osp.join(root, f'{kind}_{clip // 6000}')
        if path not in sources:
            if kind == 'frame':
                open(path, 'wb').close()
            else:
                with open(path, 'wb') as f:
                    np.save(f, np.zeros((64, 64), np.float32))
            sources[path] = True
        return path
    with open(paths['ann_file'], 'w') as f:
        for clip in range(clips):
            clip_id = f'clip_{clip:06d}'
            clip_dir = osp.join(paths['img'], clip_id)
            os.mkdir(clip_dir)
            frame = source('frame', clip)
            for name in names:
                os.link(frame, osp.join(clip_dir, name))
            os.link(source('audio', clip),
                    osp.join(paths['audio'], clip_id + '.npy'))
            f.write(f'{clip_id} {frames} {clip % 309}\n')
    open(marker, 'w').close()
    return paths


def _build_scale_dataset(paths: dict, manifest_dir: str) -> tuple:
    """(wall, CPU) seconds to build (parse and validate) the placeholder
    dataset; CPU time is what a loaded shared machine distorts least."""
    from crmt_mm.datasets import AudioVisualDataset
    start, cpu = time.perf_counter(), time.process_time()
    AudioVisualDataset(paths['ann_file'], pipeline=[],
                       data_prefix=dict(img=paths['img'],
                                        audio=paths['audio']),
                       num_classes=309, manifest_dir=manifest_dir)
    return time.perf_counter() - start, time.process_time() - cpu


def _scale_rank(rank: int, world: int, init_file: str, paths: dict,
                manifest_dir: str, queue) -> None:
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=world)
    try:
        cold = _build_scale_dataset(paths, manifest_dir)
        dist.barrier()
        warm = _build_scale_dataset(paths, manifest_dir)
        queue.put((rank, cold, warm))
    finally:
        dist.destroy_process_group()


def bench_dataset_scale(clips: int, ranks: int, root: str = None) -> dict:
    """Cold (no manifest: every file checked, sharded over ``ranks`` gloo
    processes) and warm (manifest hit) dataset build times per rank."""
    import shutil
    root = root or osp.join(tempfile.gettempdir(),
                            f'crmt_dataset_scale_{clips}')
    start = time.perf_counter()
    paths = make_placeholder_dataset(root, clips)
    generate = time.perf_counter() - start
    manifest_dir = osp.join(root, f'manifests_{ranks}')
    shutil.rmtree(manifest_dir, ignore_errors=True)
    if ranks == 1:
        times = [(0, _build_scale_dataset(paths, manifest_dir),
                  _build_scale_dataset(paths, manifest_dir))]
    else:
        ctx = mp.get_context('spawn')
        queue = ctx.Queue()
        init_file = osp.join(root, f'.dist_init_{os.getpid()}')
        procs = [ctx.Process(target=_scale_rank,
                             args=(r, ranks, init_file, paths, manifest_dir,
                                   queue)) for r in range(ranks)]
        for proc in procs:
            proc.start()
        times = sorted(queue.get(timeout=1800) for _ in procs)
        for proc in procs:
            proc.join()
        if osp.exists(init_file):
            os.remove(init_file)
    return dict(dataset_clips=clips, dataset_frames_per_clip=SCALE_FRAMES,
                dataset_ranks=ranks, dataset_generate_s=generate,
                dataset_cold_per_rank_s=max(t[1][0] for t in times),
                dataset_warm_s=max(t[2][0] for t in times),
                dataset_cold_per_rank_cpu_s=max(t[1][1] for t in times),
                dataset_warm_cpu_s=max(t[2][1] for t in times),
                dataset_times_per_rank=[dict(cold=t[1], warm=t[2])
                                        for t in times])


def run_dataset_scale(args) -> dict:
    """``--dataset-scale``: the dataset benchmark alone, goals printed."""
    result = bench_dataset_scale(args.dataset_clips, args.dataset_ranks)
    print(f"generated/reused in {result['dataset_generate_s']:.1f}s; "
          f"per rank (wall s, CPU s): {result['dataset_times_per_rank']}")
    print('\n| time | seconds | goal | met |\n|---|---|---|---|')
    for key, (op, bound) in SCALE_GOALS.items():
        met = result[key] <= bound
        result.setdefault('goals_met', {})[key] = met
        print(f'| {key} | {result[key]:.2f} | {op} {bound} | '
              f'{"yes" if met else "NO"} |')
    return result


# ---------------------------------------------------------------- main
GOALS = dict(crmt_vs_jt_iter=('<=', 1.05), at_vs_ideal_iter=('<=', 1.1),
             tau_speedup=('>=', 2.0), phase2_vs_phase1_epoch=('<=', 0.1),
             pgd_vs_ideal=('<=', 1.15), peak_mem_ratio=('<=', 1.3),
             loader_vs_train_throughput=('>=', 1.0),
             strong_eval_vs_naive=('<=', 0.4))


# ---------------------------------------------------------------- smoothing
#: Base model configs of the randomized-smoothing block.
SMOOTHING_MODELS = dict(avdigits='configs/_base_/models/crmt_avdigits.py',
                        resnet18='configs/_base_/models/crmt_resnet18_av.py')
GOALS['smoothing_vs_forward'] = ('>=', 0.8)


def smoothing_model(kind: str, full_res: bool):
    """The AV-Digits or 2 x ResNet-18 recognizer for the smoothing block;
    ResNet-18 at the CPU-friendly size of :func:`build_model` unless
    ``full_res`` (the Kinetics-Sounds input size)."""
    import crmt_mm  # noqa: F401
    from mmaction.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmaction')
    cfg = Config.fromfile(osp.join(ROOT, SMOOTHING_MODELS[kind])).model
    cfg.pop('data_preprocessor')
    if kind == 'resnet18' and not full_res:
        cfg.encoders.visual.input_shape = (3, 3, 64, 64)
        cfg.encoders.audio.input_shape = (1, 256, 64)
    torch.manual_seed(0)
    return MODELS.build(cfg).to(DEVICE).eval()


def bench_smoothing(kind, batch, repeats, full_res=False, clip_n=1000,
                    clip_n0=100):
    """``smoothing_vs_forward``: copies/s of CERTIFY (one clip, n0 = batch,
    n = 3 x batch, ``batch_size=batch``: 4 forwards of ``batch`` noisy
    copies) over samples/s of 4 plain batched forwards of ``batch`` clips
    (equal work on both sides, so that load drift hits them alike); then
    the seconds per clip at n0 = ``clip_n0``, n = ``clip_n`` (``clip_n=0``
    skips it), extrapolated linearly in the number of forwards to
    n = 100,000."""
    from crmt_mm.certification import (GaussianSmoothingCertifier,
                                       LateFusionForward)
    model = smoothing_model(kind, full_res)
    cached = LateFusionForward(model)
    x, _ = make_batch(model, batch)
    one = {m: v[:1] for m, v in x.items()}
    certifier = GaussianSmoothingCertifier(
        modality=model.modalities[-1], sigma=0.25, n0=batch, n=3 * batch,
        batch_size=batch)

    def forward():
        with torch.no_grad():
            for _ in range(4):
                model.fused_logits(x)

    t = interleaved(dict(
        forward=forward,
        certify=lambda: certifier.certify(model.fused_logits, one, [0]),
        cached=lambda: certifier.certify(cached, one, [0])), repeats)
    result = dict(smoothing_model=kind, smoothing_full_res=full_res,
                  smoothing_batch=batch,
                  smoothing_noised_modality=model.modalities[-1],
                  smoothing_4_forwards_s=t['forward'],
                  smoothing_certify_4_forwards_s=t['certify'],
                  smoothing_certify_cached_4_forwards_s=t['cached'],
                  smoothing_vs_forward=t['forward'] / t['certify'],
                  smoothing_cached_vs_forward=t['forward'] / t['cached'])
    print(f'  smoothing_vs_forward {result["smoothing_vs_forward"]:.3f} '
          f'(4 forwards {t["forward"]:.3f}s, certify {t["certify"]:.3f}s); '
          'with the clean branch fixed (LateFusionForward, what the '
          'evaluation uses) smoothing_cached_vs_forward '
          f'{result["smoothing_cached_vs_forward"]:.3f}',
          flush=True)  # before the long per-clip measurement
    if clip_n:
        clip = GaussianSmoothingCertifier(
            modality=model.modalities[-1], sigma=0.25, n0=clip_n0,
            n=clip_n, batch_size=batch)
        synchronize()
        start = time.perf_counter()
        clip.certify(cached, one, [0])
        synchronize()
        seconds = time.perf_counter() - start
        per_forward = seconds / (-(-clip_n0 // batch) - (-clip_n // batch))
        result.update(
            smoothing_clip_forward='LateFusionForward (clean branch fixed)',
            smoothing_clip_n0=clip_n0, smoothing_clip_n=clip_n,
            smoothing_seconds_per_clip=seconds,
            smoothing_seconds_per_clip_n100000_extrapolated=per_forward * (
                -(-clip_n0 // batch) - (-100_000 // batch)))
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='crmt_mm cost ratios')
    parser.add_argument('--quick', action='store_true',
                        help='fewer repeats (< 5 min on 2 CPU cores)')
    parser.add_argument('--model', choices=MODEL_CHOICES, default='avdigits')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: torch default)')
    parser.add_argument('--device', default='cpu',
                        help="'cpu' or 'cuda' (peak memory is CPU-only)")
    parser.add_argument('--out', default=None, help='write JSON here')
    parser.add_argument(
        '--strong-eval', choices=('off', 'on', 'only', 'cost'),
        default='off',
        help="AutoAttack-style ensemble: 'on' adds strong_eval_vs_naive "
             "and seconds per 1,000 clips, 'only' runs nothing else, "
             "'cost' only the seconds per 1,000 clips")
    parser.add_argument('--strong-clips', type=int, default=4,
                        help='clips for the per-1,000-clip extrapolation')
    parser.add_argument('--strong-fraction', type=float, default=0.1,
                        help="fraction of 'standard''s steps and queries "
                             'timed for the per-1,000-clip figure')
    parser.add_argument('--strong-grid-scale', type=float, default=1.0,
                        help="multiplies the demo grid (an untrained "
                             'model needs larger budgets to break)')
    parser.add_argument('--dataset-scale', action='store_true',
                        help='only time the AudioVisualDataset build on a '
                        'generated VGGSound-sized list (cold and warm)')
    parser.add_argument('--dataset-clips', type=int, default=SCALE_CLIPS,
                        help='clips of the --dataset-scale list')
    parser.add_argument('--dataset-ranks', type=int, default=1,
                        help='gloo processes sharing the --dataset-scale '
                        'check')
    parser.add_argument('--smoothing', action='store_true',
                        help='run only the randomized-smoothing block '
                        '(smoothing_vs_forward, seconds per clip)')
    parser.add_argument('--smoothing-full-res', action='store_true',
                        help='smoothing block on ResNet-18 at the '
                        'Kinetics-Sounds input size')
    parser.add_argument('--smoothing-clip-n', type=int, default=1000,
                        help='n of the seconds-per-clip measurement '
                        '(0 skips it)')
    parser.add_argument('--tau-chunks', default='4,8,16,32',
                        help='class chunks for tau_batched_vs_loop')
    parser.add_argument('--only', default=None,
                        help='comma-separated steps to run (iterations, tau, '
                        'tau_batched, cost_model, phase2, pgd, memory, '
                        'loader)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.dataset_scale:
        result = run_dataset_scale(args)
        if args.out:
            with open(args.out, 'w') as f:
                json.dump(result, f, indent=2)
        return result
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else 15
    kind, batch = args.model, args.batch
    print(f'model={kind} batch={batch} threads={torch.get_num_threads()} '
          f'repeats={repeats}', flush=True)
    result = dict(model=kind, batch=batch, threads=torch.get_num_threads(),
                  repeats=repeats, machine=dict(
                      platform=platform.platform(), cpus=os.cpu_count(),
                      processor=platform.processor(),
                      torch=torch.__version__))
    steps = [
        ('iterations', lambda: bench_iterations(kind, batch, repeats)),
        ('tau', lambda: bench_tau(kind, batch // 2, 2,
                                  max(2, repeats // 3))),
        ('tau_batched', lambda: bench_tau_batched(
            kind, batch // 2, 1, max(2, repeats // 3),
            [int(c) for c in args.tau_chunks.split(',')])),
        ('cost_model', lambda: bench_cost_model(kind, batch // 2,
                                                max(2, repeats // 2))),
        ('phase2', lambda: bench_phase2(kind, batch, 4,
                                        max(3, repeats // 2))),
        ('pgd', lambda: bench_pgd(kind, batch, repeats)),
    ]
    if DEVICE.type == 'cpu':  # RSS sampling measures host memory only
        steps.append(('memory', lambda: bench_memory(kind, batch)))
    strong = [('strong_eval', lambda: bench_strong_eval(
                  kind, batch, args.quick, args.strong_grid_scale)),
              ('strong_cost', lambda: bench_strong_cost(
                  kind, args.strong_clips, args.strong_fraction))]
    if args.strong_eval == 'only':
        steps = strong
    elif args.strong_eval == 'cost':
        steps = strong[1:]
    elif args.strong_eval == 'on':
        steps += strong
    if args.smoothing:
        steps = [('smoothing', lambda: bench_smoothing(
            kind, batch, repeats, args.smoothing_full_res,
            args.smoothing_clip_n))]
    only = None if args.only is None else set(args.only.split(','))
    for name, step in steps:
        if only is not None and name not in only:
            continue
        start = time.perf_counter()
        result.update(step())
        print(f'  {name}: {time.perf_counter() - start:.1f}s', flush=True)
    if kind == 'avdigits' and args.strong_eval not in ('only', 'cost') \
            and not args.smoothing and (only is None or 'loader' in only):
        result.update(bench_loader(batch, batch / result['jt_iter_s']))
    print('\n| ratio | value | goal | met |\n|---|---|---|---|')
    for key, (op, bound) in GOALS.items():
        value = result.get(key)
        if value is None:
            continue
        met = value <= bound if op == '<=' else value >= bound
        result.setdefault('goals_met', {})[key] = met
        print(f'| {key} | {value:.3f} | {op} {bound} | '
              f'{"yes" if met else "NO"} |')
    write_json(args.out, result)
    return result


def write_json(path, result: dict) -> None:
    """Write ``result`` to ``path`` (its folder created); None: nothing."""
    if path:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
