"""The docs quote what the code and the result files say: README tables are
generated from docs/results, and every cited repository path exists."""
import json
import os.path as osp
import re

import pytest

from helpers import ROOT, load_tool

MARKER = re.compile(r'<!-- generated: seeds_table (\S+) (\S+)(?: (\S+))? -->')


def generated_tables(text):
    """``(json path, keys, pair, table lines)`` after every marker."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = MARKER.match(line)
        if match:
            table = []
            for row in lines[i + 1:]:
                if not row.startswith('|'):
                    break
                table.append(row)
            yield match.group(1), match.group(2).split(','), \
                match.group(3), '\n'.join(table)


def test_readme_tables_are_generated_from_the_result_files():
    demo = load_tool('demo')
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        found = list(generated_tables(f.read()))
    assert found, 'README.md has no generated table'
    for path, keys, pair, table in found:
        with open(osp.join(ROOT, path)) as f:
            result = json.load(f)
        if pair is not None:
            result = result['pairs'][pair]
        expected = demo.seeds_table(result, keys)
        assert table == expected, (
            f'the README table from {path} was edited by hand or the file '
            f'changed; paste this instead:\n{expected}')


CITED = re.compile(r'(?<![\w/.~])((?:tests|crmt_mm|tools|configs)/[\w./-]*\w)')
TEST_FILE = re.compile(r'(?<![\w/])(test_\w+\.py)')


@pytest.mark.parametrize('page', ['README.md'] + [
    f'docs/{name}' for name in (
        'benchmarks.md', 'certification.md', 'datasets.md', 'design.md',
        'evaluation.md', 'framework.md', 'integration.md', 'method.md',
        'reliability.md')])
def test_every_cited_path_exists(page):
    with open(osp.join(ROOT, page), encoding='utf-8') as f:
        text = f.read()
    missing = []
    for path in sorted(set(CITED.findall(text))):
        path = path.split('::')[0]
        if any(ch in path for ch in '{}*<>') or '…' in path:
            continue  # a pattern, not a file
        if not osp.exists(osp.join(ROOT, path)):
            missing.append(path)
    for name in sorted(set(TEST_FILE.findall(text))):  # cited without tests/
        if not osp.exists(osp.join(ROOT, 'tests', name)):
            missing.append(name)
    assert not missing, f'{page} cites paths that do not exist: {missing}'
