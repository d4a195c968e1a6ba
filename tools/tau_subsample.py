"""How tau and certified accuracy change when tau sees a fraction of the
training data (what ``tau_max_batches`` does).

tau is a max over samples, so a sub-sample can only lower it, which raises
every certified radius. This tool measures by how much: it computes the
tau of every small unit of ``--unit-batch`` training samples once (the
cost of one full estimate), then for each fraction and seed takes the max
over a random subset of units, and evaluates the certified accuracy of the
test set with that tau.

    # AV-Digits, a CRMT-JT model trained for a few step-1 epochs, or a
    # trained model (e.g. the demo's CRMT)
    python tools/tau_subsample.py --model avdigits --epochs 3 --out sub.json
    python tools/tau_subsample.py --model avdigits \
        --checkpoint work_dirs/demo/crmt/epoch_25.pth --out sub.json
    # 2 x ResNet-18 (KS architecture) on generated class-dependent data
    python tools/tau_subsample.py --model resnet18 --out sub_r18.json

Numbers are for orientation on small models; see docs/benchmarks.md.
"""
import argparse
import math
import os.path as osp
import statistics
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

import torch  # noqa: E402

FRACTIONS = (0.01, 0.05, 0.1, 0.25, 1.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=('avdigits', 'resnet18'),
                        default='avdigits')
    parser.add_argument('--epochs', type=int, default=3,
                        help='AV-Digits: step-1 training epochs (without '
                        '--checkpoint)')
    parser.add_argument('--checkpoint', default=None,
                        help='AV-Digits: a trained crmt_avdigits.py '
                        'checkpoint to measure instead of training')
    parser.add_argument('--data-root', default=osp.join(
        tempfile.gettempdir(), 'crmt_subsample_avdigits'))
    parser.add_argument('--fractions', default=','.join(map(str, FRACTIONS)))
    parser.add_argument('--seeds', type=int, default=5)
    parser.add_argument('--unit-batch', type=int, default=2,
                        help='samples per tau unit (the sub-sampling grain)')
    parser.add_argument('--radii', default='0.25,0.5,1.0')
    parser.add_argument('--class-chunk', default=None,
                        help="tau class_chunk (int or 'auto')")
    parser.add_argument('--num-train', type=int, default=100,
                        help='resnet18: generated training samples')
    parser.add_argument('--num-test', type=int, default=64,
                        help='resnet18: generated test samples')
    parser.add_argument('--train-iters', type=int, default=150,
                        help='resnet18: training iterations (batch 16); 30 '
                        'left the model at chance, 150 reached 0.56 clean '
                        'accuracy (docs/benchmarks.md)')
    parser.add_argument('--out', default=None)
    args = parser.parse_args(argv)
    if args.checkpoint and args.model != 'avdigits':
        parser.error('--checkpoint is for --model avdigits (the resnet18 '
                     'model trains on generated data)')
    given = [a.split('=')[0] for a in (sys.argv[1:] if argv is None
                                       else argv)]
    if args.checkpoint and '--epochs' in given:
        parser.error('--epochs trains a model; --checkpoint measures a '
                     'trained one: give one of them')
    return args


# ---------------------------------------------------------------- models
def avdigits_model_and_data(args):
    """A CRMT-JT AV-Digits model after ``--epochs`` step-1 epochs, and the
    preprocessed train units and test set."""
    import crmt_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.runner import Runner

    from crmt_mm.data_prep.avdigits import prepare_avdigits
    prepare_avdigits(args.data_root, seed=0)
    cfg = Config.fromfile(osp.join(ROOT, 'configs/crmt_avdigits.py'))
    for key, split in (('train_dataloader', 'train'),
                       ('test_dataloader', 'test')):
        loader = cfg[key]
        loader.dataset.ann_file = osp.join(args.data_root,
                                           f'avdigits_{split}.txt')
        loader.dataset.data_prefix = dict(
            img=osp.join(args.data_root, 'rawframes', split),
            audio=osp.join(args.data_root, 'audio', split))
        loader.num_workers, loader.persistent_workers = 0, False
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=args.epochs)
    cfg.custom_hooks = []
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.work_dir = osp.join(args.data_root, 'work')
    cfg.log_level = 'WARNING'
    test_loader_cfg = Config.fromfile(
        osp.join(ROOT, 'configs/crmt_avdigits.py')).test_dataloader
    test_loader_cfg.dataset.update(
        ann_file=osp.join(args.data_root, 'avdigits_test.txt'),
        data_prefix=dict(img=osp.join(args.data_root, 'rawframes', 'test'),
                         audio=osp.join(args.data_root, 'audio', 'test')))
    test_loader_cfg.num_workers, test_loader_cfg.persistent_workers = 0, False
    train_units_cfg = cfg.train_dataloader.copy()
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    if args.checkpoint:
        runner.load_checkpoint(args.checkpoint)
    else:
        runner.train()
    train_s = time.perf_counter() - start
    model = runner.model.eval()
    train_units_cfg.batch_size = args.unit_batch
    train_units_cfg.sampler = dict(type='DefaultSampler', shuffle=False)

    def prepared(loader_cfg):
        out = []
        for batch in Runner.build_dataloader(loader_cfg):
            data = model.data_preprocessor(batch, False)
            x = model.split_inputs(data['inputs'])
            out.append((x, model.labels_of(data['data_samples'])))
        return out

    units = [x for x, _ in prepared(train_units_cfg)]
    test = prepared(test_loader_cfg)
    return model, units, test, dict(
        checkpoint=args.checkpoint,
        train_epochs=None if args.checkpoint else args.epochs,
        train_s=train_s)


def resnet18_model_and_data(args):
    """2 x ResNet-18 at 64^2 (tools/benchmark.py's KS model), trained for
    ``--train-iters`` steps on generated data whose class shifts the mean
    of both modalities (so accuracy and radii are not those of chance)."""
    from benchmark import build_model, train_step
    model = build_model('resnet18', 'crmt')
    g = torch.Generator().manual_seed(0)
    templates = {m: torch.randn((model.num_classes, 1) + e.input_shape,
                                generator=g)
                 for m, e in model.encoders.items()}

    def generate(n):
        y = torch.randint(0, model.num_classes, (n, ), generator=g)
        x = {m: 0.5 * t[y] + torch.randn(t[y].shape, generator=g)
             for m, t in templates.items()}
        return x, y

    train_x, train_y = generate(args.num_train)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for it in range(args.train_iters):
        idx = torch.randint(0, args.num_train, (16, ), generator=g)
        train_step(model, opt, {m: v[idx] for m, v in train_x.items()},
                   train_y[idx])
    train_s = time.perf_counter() - start
    model.eval()
    b = args.unit_batch
    units = [{m: v[i:i + b] for m, v in train_x.items()}
             for i in range(0, args.num_train, b)]
    test_x, test_y = generate(args.num_test)
    test = [({m: v[i:i + 16] for m, v in test_x.items()}, test_y[i:i + 16])
            for i in range(0, args.num_test, 16)]
    return model, units, test, dict(train_iters=args.train_iters,
                                    train_s=train_s)


# ---------------------------------------------------------------- measure
def unit_taus(model, units, class_chunk):
    """tau [M, K] of every unit, and the seconds of all of them."""
    from crmt_mm.certification import estimate_tau
    start = time.perf_counter()
    taus = [estimate_tau(model.modality_logits, [x], model.modalities,
                         model.num_classes, class_chunk=class_chunk)['tau']
            for x in units]
    return torch.stack(taus), time.perf_counter() - start


def certified_accuracies(model, test, tau, radii):
    from crmt_mm.certification import certified_radius
    r = []
    with torch.no_grad():
        for x, y in test:
            z = torch.stack(list(model.modality_logits(x).values()))
            r.append(certified_radius(
                z, model.integration_weights(), model.bias, tau, y,
                model.competitor, model.a_constraint != 'none'))
    r = torch.cat(r)
    return {str(R): float((r > R).float().mean()) for R in radii}, \
        float((r > 0).float().mean())


def main(argv=None):
    args = parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(',')]
    radii = [float(r) for r in args.radii.split(',')]
    chunk = args.class_chunk
    if chunk is not None and chunk != 'auto':
        chunk = int(chunk)
    torch.manual_seed(0)
    build = avdigits_model_and_data if args.model == 'avdigits' \
        else resnet18_model_and_data
    model, units, test, training = build(args)
    taus, tau_s = unit_taus(model, units, chunk)
    full = taus.amax(0)
    samples = sum(next(iter(x.values())).shape[0] for x in units)
    full_acc, clean = certified_accuracies(model, test, full, radii)
    rows = []
    for f in fractions:
        n = max(1, math.ceil(f * len(units)))
        per_seed = []
        for seed in range(args.seeds if n < len(units) else 1):
            g = torch.Generator().manual_seed(seed)
            pick = torch.randperm(len(units), generator=g)[:n]
            tau = taus[pick].amax(0)
            acc, _ = certified_accuracies(model, test, tau, radii)
            ratio = tau[full > 0] / full[full > 0]
            per_seed.append(dict(ratio_mean=float(ratio.mean()),
                                 ratio_min=float(ratio.min()), acc=acc))

        def spread(get):
            values = [get(s) for s in per_seed]
            return dict(mean=statistics.fmean(values),
                        min=min(values), max=max(values))

        rows.append(dict(
            fraction=f, units=n, samples=n * args.unit_batch,
            tau_cost_s=tau_s * n / len(units),
            tau_ratio_mean=spread(lambda s: s['ratio_mean']),
            tau_ratio_min=spread(lambda s: s['ratio_min']),
            certified_acc={str(R): spread(lambda s, R=R: s['acc'][str(R)])
                           for R in radii},
            seeds=len(per_seed)))
    result = dict(model=args.model, num_classes=model.num_classes,
                  train_samples=samples, unit_batch=args.unit_batch,
                  class_chunk=chunk, full_tau_s=tau_s,
                  tau_samples_per_s=samples / tau_s, clean_acc=clean,
                  certified_acc_full=full_acc, training=training,
                  threads=torch.get_num_threads(), rows=rows)
    print(f'{args.model}: {samples} training samples, full tau '
          f'{tau_s:.1f}s ({samples / tau_s:.1f} samples/s), clean acc '
          f'{clean:.3f}')
    head = ' | '.join(f'cert@{R}' for R in radii)
    print(f'\n| fraction | samples | tau cost s | tau/tau_100 mean (min) | '
          f'{head} |')
    print('|' + '---|' * (4 + len(radii)))
    for row in rows:
        accs = ' | '.join(
            f'{row["certified_acc"][str(R)]["mean"]:.3f}' for R in radii)
        print(f'| {row["fraction"]:g} | {row["samples"]} | '
              f'{row["tau_cost_s"]:.1f} | '
              f'{row["tau_ratio_mean"]["mean"]:.3f} '
              f'({row["tau_ratio_min"]["min"]:.3f}) | {accs} |')
    from benchmark import write_json
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
