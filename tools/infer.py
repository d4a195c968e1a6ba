"""Multi-modal inference on one clip: fused and per-modality top-k.

Inputs are either a clip on disk (``--frames DIR --audio FILE.npy``) or
one entry of an annotation list (``--index I`` with the test set of the
config, or of ``--ann-file``). The config's test pipeline prepares them,
so the clip is seen exactly as ``tools/test.py`` sees it. ``--radius``
adds CRMT's certified radii of the fused prediction (the joint one and one
per modality, in the units of the preprocessed inputs; they need the
checkpoint's Lipschitz estimates ``tau``, written in CRMT's step 2).

Example::

    python tools/infer.py configs/crmt_avdigits.py work_dirs/x/epoch_30.pth \
        --frames data/avdigits/rawframes/test/c0000 \
        --audio data/avdigits/audio/test/c0000.npy --radius
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import crmt_mm.compat  # noqa: E402,F401  (before Config.fromfile)
from mmengine.config import Config, DictAction  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fused and per-modality top-k of one multi-modal clip')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file (trusted: it is '
                        'fully unpickled)')
    parser.add_argument('--frames', help='directory of the clip\'s frames, '
                        "named by the test dataset's filename_tmpl")
    parser.add_argument('--audio', help='.npy audio feature of the clip')
    parser.add_argument('--ann-file', help='annotation list to take the '
                        'clip from (default: the test set of the config)')
    parser.add_argument('--index', type=int,
                        help='line of the annotation list to run')
    parser.add_argument('--topk', type=int, default=5,
                        help='how many classes to print. Default: 5')
    parser.add_argument('--radius', action='store_true',
                        help='also print the certified radii of the fused '
                        'prediction (needs tau in the checkpoint)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--out', help='also write the result as JSON here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value')
    args = parser.parse_args(argv)
    raw = args.frames is not None or args.audio is not None
    if raw and (args.frames is None or args.audio is None):
        parser.error('--frames and --audio go together')
    if raw == (args.index is not None):
        parser.error('give either --frames DIR --audio FILE.npy or --index I '
                     '(with an optional --ann-file)')
    if args.ann_file is not None and args.index is None:
        parser.error('--ann-file needs --index')
    if args.topk < 1:
        parser.error('--topk must be >= 1')
    return args


def load_clip(dataset_cfg: dict, args):
    """The packed sample (``inputs``, ``data_samples``) and its dataset
    metainfo, through the test pipeline."""
    from mmaction.registry import DATASETS
    from mmengine.dataset import Compose
    if args.index is not None:
        cfg = dict(dataset_cfg)
        if args.ann_file is not None:
            cfg['ann_file'] = args.ann_file
        dataset = DATASETS.build(cfg)
        if not 0 <= args.index < len(dataset):
            raise SystemExit(f'--index {args.index} is outside the '
                             f'{len(dataset)} clips of {dataset.ann_file}')
        return dataset[args.index], dataset.metainfo
    for path, kind in ((args.frames, 'directory'), (args.audio, 'file')):
        if not (osp.isdir if kind == 'directory' else osp.isfile)(path):
            raise SystemExit(f'{path}: no such {kind}')
    # The data info AudioVisualDataset would give this clip.
    template = dataset_cfg.get('filename_tmpl', 'img_{:05d}.png')
    start = dataset_cfg.get('start_index', 1)
    total = 0
    while osp.isfile(osp.join(args.frames, template.format(start + total))):
        total += 1
    if total == 0:
        raise SystemExit(
            f'{args.frames}: no frame {template.format(start)} (the test '
            f"dataset's filename_tmpl {template!r} and start_index {start})")
    info = dict(frame_dir=args.frames, total_frames=total,
                filename_tmpl=template, start_index=start,
                audio_path=args.audio, modality='RGB')
    metainfo = dict(dataset_cfg.get('metainfo') or {})
    return Compose(dataset_cfg['pipeline'])(info), metainfo


def class_name(classes, index: int) -> str:
    return str(classes[index]) if classes is not None and \
        index < len(classes) else str(index)


def infer(args) -> dict:
    import torch
    from mmaction.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmengine.utils import import_modules_from_strings

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    dataset_cfg = cfg.test_dataloader.dataset
    sample, metainfo = load_clip(dataset_cfg, args)

    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu',
                    logger='silent')
    model.to(args.device).eval()
    if not hasattr(model, 'modality_logits'):
        raise SystemExit(f'{type(model).__name__} gives no per-modality '
                         'logits; tools/infer.py needs a CRMTRecognizer.')
    with torch.no_grad():
        data = model.data_preprocessor(
            dict(inputs={k: [v] for k, v in sample['inputs'].items()},
                 data_samples=[sample['data_samples']]), False)
        x = model.split_inputs(data['inputs'], data['data_samples'])
        logits = model.modality_logits(x)
        scores = {'fused': model.fuse(logits).softmax(-1)[0]}
        scores.update({m: v.softmax(-1)[0] for m, v in logits.items()})
    classes = metainfo.get('classes')
    k = min(args.topk, model.num_classes)
    result = dict(clip=sample['data_samples'].metainfo.get(
        'frame_dir', args.frames), top=dict())
    gt = sample['data_samples'].get('gt_label')
    if gt is not None and int(gt.view(-1)[0]) >= 0:
        result['label'] = class_name(classes, int(gt.view(-1)[0]))
    for name, score in scores.items():
        values, indices = score.topk(k)
        result['top'][name] = [
            dict(index=int(i), name=class_name(classes, int(i)),
                 score=float(v)) for v, i in zip(values, indices)]
    if args.radius:
        result['radius'] = radii(model, logits, scores['fused'])
    return result


def radii(model, logits, fused) -> dict:
    """Joint and per-modality certified radius of the fused prediction."""
    import torch

    from crmt_mm.certification import certified_radius
    from crmt_mm.certification.radius import modality_radii
    if not bool((model.tau > 0).any()):
        raise SystemExit(
            '--radius: the checkpoint\'s tau is all zeros (it was saved '
            "before CRMT's step 2 estimated it); use a checkpoint written "
            'after the phase switch, or drop --radius.')
    z = torch.stack([logits[m] for m in model.modalities])
    labels = fused.argmax().view(1)
    args = (z, model.integration_weights(), model.bias, model.tau, labels)
    per = modality_radii(*args, model.competitor)
    joint = certified_radius(*args, model.competitor,
                             model.a_constraint != 'none')
    out = dict(joint=float(joint.detach()[0]))
    out.update({m: float(per.detach()[i, 0])
                for i, m in enumerate(model.modalities)})
    return out


def report(result: dict) -> str:
    lines = [f'clip: {result["clip"]}']
    if 'label' in result:
        lines.append(f'label: {result["label"]}')
    for name, top in result['top'].items():
        ranked = ', '.join(f'{t["name"]} ({t["score"]:.3f})' for t in top)
        lines.append(f'{name:>8} top-{len(top)}: {ranked}')
    if 'radius' in result:
        radius = ', '.join(f'{k} {v:.4f}' for k, v in result['radius'].items())
        lines.append(f'certified radius of the fused prediction: {radius}')
    return os.linesep.join(lines)


def main(argv=None):
    args = parse_args(argv)
    result = infer(args)
    print(report(result))
    if args.out is not None:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
