"""Compare robustness reports of several runs in one table and one figure.

Example (JT vs CRMT on AV-Digits)::

    python tools/robustness_report.py \
        work_dirs/jt_avdigits/robustness.json \
        work_dirs/crmt_avdigits/robustness.json \
        --labels JT CRMT --out work_dirs/compare

writes ``robustness_compare.md`` (one metric column per run, then each
run's attack settings and tau provenance) and ``robustness_compare.png``
(accuracy vs budget per modality, one colour per run).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from crmt_mm.evaluation.report import compare_reports  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Compare robustness.json files of several runs')
    parser.add_argument('reports', nargs='+', metavar='RUN_JSON',
                        help='robustness.json written by RobustTestLoop')
    parser.add_argument('--labels', nargs='+',
                        help='one name per run (default: work-dir names)')
    parser.add_argument('--out', required=True, help='output directory')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    paths = compare_reports(args.reports, args.labels, args.out)
    for path in paths.values():
        print(path)
    return paths


if __name__ == '__main__':
    main()
