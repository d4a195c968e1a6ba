"""Give a checkpoint written before ``model_identity`` existed its record.

Such checkpoints hold the per-modality column blocks of ``head.fc.weight``
and the rows of ``head.integration`` and ``tau`` in the order of the
training config's ``encoders``, which they do not store. crmt_mm now keeps
them in sorted modality-name order and refuses unrecorded checkpoints, so
convert each one once, naming the order it was trained with::

    python tools/convert_checkpoint.py configs/crmt_avdigits.py \\
        work_dirs/crmt_avdigits/epoch_25.pth epoch_25_named.pth \\
        --order visual,audio

``--order`` is the order of ``encoders`` in the *original* config file of
the run (the copy mmengine dumps into the work dir is key-sorted and says
nothing about it). The output holds the reordered ``state_dict`` (checked by
loading it into the model of CONFIG) and the input's ``meta``; optimizer and
scheduler states are dropped, so use it for testing or ``load_from``, not
``--resume``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import crmt_mm.compat  # noqa: E402,F401  (before Config.fromfile)
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402


def reorder_legacy_state(state: dict, order, model) -> dict:
    """``state`` with its modality blocks moved from ``order`` to the
    model's (sorted) order, plus the model's ``model_identity``."""
    if model.IDENTITY_KEY in state:
        raise ValueError('the checkpoint already records its modalities '
                         '(model_identity); nothing to convert.')
    if sorted(order) != sorted(model.modalities) or \
            len(set(order)) != len(order):
        raise ValueError(f'--order {list(order)} must name each modality of '
                         f'the config once: {list(model.modalities)}')
    index = [list(order).index(m) for m in model.modalities]
    state = dict(state)
    dims = [model.encoders[m].feat_dim for m in order]
    blocks = state['head.fc.weight'].split(dims, dim=1)
    state['head.fc.weight'] = torch.cat([blocks[i] for i in index], dim=1)
    for key in ('head.integration', 'tau'):
        if key in state:
            state[key] = state[key][index]
    state[model.IDENTITY_KEY] = model.model_identity.clone()
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config of the run (any copy)')
    parser.add_argument('checkpoint', help='checkpoint to convert')
    parser.add_argument('out', help='converted checkpoint file')
    parser.add_argument('--order', required=True,
                        help='comma-separated encoder names in the order of '
                        'the original config file, e.g. visual,audio')
    args = parser.parse_args(argv)
    from mmaction.registry import MODELS
    from mmengine.registry import init_default_scope

    from crmt_mm.compat import safe_torch_load
    import crmt_mm  # noqa: F401
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    model = MODELS.build(cfg.model)
    checkpoint = safe_torch_load(args.checkpoint, map_location='cpu')
    state = reorder_legacy_state(checkpoint.get('state_dict', checkpoint),
                                 args.order.split(','), model)
    model.load_state_dict(state)  # every crmt_mm check on the result
    meta = dict(checkpoint.get('meta') or {},
                converted_from=osp.abspath(args.checkpoint),
                converted_order=args.order.split(','))
    torch.save(dict(meta=meta, state_dict=model.state_dict()), args.out)
    print(f'wrote {args.out}: modalities {list(model.modalities)} (was '
          f'{args.order.split(",")})')


if __name__ == '__main__':
    main()
