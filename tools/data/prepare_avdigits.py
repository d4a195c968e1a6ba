"""Write the AV-Digits dataset in mmaction2's rawframe layout.

Usage::

    python tools/data/prepare_avdigits.py OUT_DIR [--seed S] \
        [--train-per-class N] [--test-per-class N] [--force]

Deterministic from the seed; a second call with the same arguments returns
at once (see ``crmt_mm.data_prep.avdigits.prepare_avdigits``).
"""
import argparse
import json
import os.path as osp
import sys
import time

# Tools run as plain scripts: make the repository importable.
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import crmt_mm.compat  # noqa: E402,F401  (fixes the mmaction import)
from crmt_mm.data_prep.avdigits import prepare_avdigits  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(
        description='Prepare the embedded AV-Digits audio-visual dataset.')
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of split, pairing and noise')
    parser.add_argument('--train-per-class', type=int, default=None,
                        help='keep only N train clips per class')
    parser.add_argument('--test-per-class', type=int, default=None,
                        help='keep only N test clips per class')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if a matching output exists')
    return parser.parse_args()


def main():
    args = parse_args()
    start = time.time()
    info = prepare_avdigits(
        args.out_dir,
        seed=args.seed,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        force=args.force)
    state = 'up to date' if info['skipped'] else \
        f'written in {time.time() - start:.1f} s'
    print(f'AV-Digits in {info["out_dir"]} ({state}): '
          f'{info["num_clips"]["train"]} train / '
          f'{info["num_clips"]["test"]} test clips')
    print('normalisation (avdigits_norm.json):')
    print(json.dumps(info['norm'], indent=2))


if __name__ == '__main__':
    main()
