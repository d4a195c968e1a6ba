"""tools/train.py seed flags override the config's randomness; the
AV-Digits configs refuse a normalisation that differs from the prepared
data's avdigits_norm.json."""
import json
import os.path as osp
import shutil

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

import crmt_mm  # noqa: F401
from helpers import config_path, tiny_config
from helpers_identity import load_tool


@pytest.mark.parametrize('flags, want', [
    ([], dict(seed=0, deterministic=False)),
    (['--seed', '7'], dict(seed=7, deterministic=False)),
    (['--seed', '3', '--deterministic', '--diff-rank-seed'],
     dict(seed=3, deterministic=True, diff_rank_seed=True)),
])
def test_seed_flags_override_the_config_randomness(flags, want):
    train = load_tool('train')
    name = config_path('crmt_avdigits.py')
    cfg = train.merge_args(Config.fromfile(name),
                           train.parse_args([name] + flags))
    assert cfg.randomness == want


def test_seed_flag_reaches_the_runner(avdigits_tiny, tmp_path):
    cfg = tiny_config('jt_avdigits.py', avdigits_tiny, str(tmp_path))
    path = str(tmp_path / 'cfg.py')
    cfg.dump(path)
    train = load_tool('train')
    runner = train.build_runner(train.merge_args(
        Config.fromfile(path), train.parse_args([path, '--seed', '11'])))
    assert runner.seed == 11


def test_normalisation_must_match_the_prepared_data(avdigits_tiny,
                                                    tmp_path):
    root = str(tmp_path / 'data')
    shutil.copytree(avdigits_tiny, root)
    with open(osp.join(root, 'avdigits_norm.json')) as f:
        norm = json.load(f)
    norm['visual'].update(mean=140.0, std=20.0)  # other generator knobs
    with open(osp.join(root, 'avdigits_norm.json'), 'w') as f:
        json.dump(norm, f)
    cfg = tiny_config('crmt_avdigits.py', root, str(tmp_path / 'run'))
    with pytest.raises(ValueError, match=r"input 'imgs': config mean "
                       r"\[106\.09, 106\.09, 106\.09\].*prepared data mean "
                       r"140\.0000 std 20\.0000: set model\.data_preprocessor"
                       r"\.preprocessors\.imgs mean=\[140\.00\] \* C, "
                       r"std=\[20\.00\]"):
        Runner.from_cfg(cfg).test()
    cfg = tiny_config('crmt_avdigits.py', root, str(tmp_path / 'run2'))
    cfg.model.data_preprocessor.preprocessors.imgs.update(
        mean=[140.0] * 3, std=[20.0] * 3)
    cfg.model.data_preprocessor.preprocessors.audios.update(
        mean=[0.0], std=[1.0])
    with pytest.raises(ValueError, match=r"'audios' is stored normalised"):
        Runner.from_cfg(cfg).test()
