"""Every crmt_mm import inside the tools resolves, including the lazy ones
in function bodies that a CPU test run may never reach (a moved module
once broke tools/tau_subsample.py and the GPU check this way)."""
import ast
import glob
import importlib
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = sorted(glob.glob(osp.join(ROOT, 'tools', '**', '*.py'),
                         recursive=True))


def crmt_imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split('.')[0] == 'crmt_mm':
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == 'crmt_mm':
                    yield node.lineno, alias.name, []


@pytest.mark.parametrize('path', TOOLS, ids=lambda p: osp.relpath(p, ROOT))
def test_crmt_mm_imports_of_tools_resolve(path):
    for line, module, names in crmt_imports(path):
        where = f'{osp.relpath(path, ROOT)}:{line}'
        try:
            mod = importlib.import_module(module)
            for name in names:
                if not hasattr(mod, name):
                    importlib.import_module(f'{module}.{name}')  # submodule
        except ImportError as err:
            pytest.fail(f'{where}: {err}')


def test_tau_subsample_rejects_options_it_would_ignore():
    from helpers import load_tool
    tool = load_tool('tau_subsample')
    assert tool.parse_args(['--checkpoint', 'c.pth']).checkpoint == 'c.pth'
    for argv in (['--model', 'resnet18', '--checkpoint', 'c.pth'],
                 ['--checkpoint', 'c.pth', '--epochs=2']):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)
