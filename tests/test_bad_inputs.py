"""Bad inputs met by a new user (issue 20, item 3): each fails before the
first iteration where the information is there (else at the first batch)
with a message naming the key, file, URL or entry and the fix.

The rest of the bad-input matrix of ``docs/reliability.md`` (section 4) is
tested in ``test_reliability.py``, ``test_datasets.py`` and the files it
names.
"""
import os
import os.path as osp

import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint

from crmt_mm.compat import TRUST_ENV, CorruptCheckpointError
from helpers import config_path, load_tool, tiny_config

init_default_scope('mmaction')


def build(name: str):
    """The model of ``configs/<name>``."""
    return MODELS.build(Config.fromfile(config_path(name)).model)


def test_jt_checkpoint_into_crmt_config_names_both_heads(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / 'jt.pth')
    torch.save(dict(state_dict=build('jt_avdigits.py').state_dict(),
                    meta={}), path)
    with pytest.raises(ValueError, match=(
            r'the checkpoint has head ConcatHead, this config has head '
            r'CRMTHead.*config of the run that wrote the checkpoint.*'
            r"Missing keys: \['head\.integration'\]")):
        load_checkpoint(build('crmt_avdigits.py'), path)


class Foreign:
    """A class outside the safe loader's allow-list."""


@pytest.mark.parametrize('content', ['empty', 'random', 'truncated',
                                     'truncated_legacy'])
def test_corrupt_checkpoint_is_called_corrupt(tmp_path, monkeypatch,
                                              content):
    """An empty, random or cut-short file is corrupt, with or without the
    trust flag (which cannot help and is not offered); a well-formed file
    with a foreign class gets the trust advice."""
    whole = tmp_path / 'whole.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(64))), whole,
               _use_new_zipfile_serialization=content != 'truncated_legacy')
    data = {'empty': b'', 'random': torch.randint(
        0, 256, (4096, ), generator=torch.Generator().manual_seed(0),
        dtype=torch.uint8).numpy().tobytes()}.get(
            content, whole.read_bytes()[:200])
    path = tmp_path / 'epoch_3.pth'
    path.write_bytes(data)
    what = 'empty' if content == 'empty' else 'corrupt'
    for trust in ('0', '1'):
        monkeypatch.setenv(TRUST_ENV, trust)
        with pytest.raises(CorruptCheckpointError) as info:
            CheckpointLoader.load_checkpoint(str(path))
        message = str(info.value)
        assert f"Checkpoint '{path}' is {what}" in message
        assert 'previous epoch_N.pth' in message
        assert f'{TRUST_ENV}=1 cannot read it' in message
        assert f'set {TRUST_ENV}=1' not in message
    monkeypatch.setenv(TRUST_ENV, '0')
    torch.save(dict(meta=Foreign()), path)
    with pytest.raises(RuntimeError, match=(
            rf"Refusing to load checkpoint '{path}'.*test_bad_inputs\.Foreign"
            rf".*set {TRUST_ENV}=1 and retry")):
        CheckpointLoader.load_checkpoint(str(path))


def entry(kind, index, modality='audio'):
    return (rf"test_cfg \(RobustTestLoop\)\.{kind}\[{index}\] \(\w+, "
            rf"modality '{modality}'\): .*")


SMOOTHING = dict(type='GaussianSmoothingCertifier', modality='audio',
                 sigma=0.25, n0=8, n=32)
#: (test_cfg key, value, message pattern): the entry is named by position,
#: type and modality, then the value.
BAD_ENTRIES = [
    ('smoothing', [dict(SMOOTHING, n0=64, n=8)],
     entry('smoothing', 0) + r'n0=64 \(selection draws\) exceeds n=8.*'
     r'swapped\? Use n0 <= n'),
    ('smoothing', [SMOOTHING, dict(SMOOTHING, modality='visual', sigma=-1)],
     entry('smoothing', 1, 'visual') + r'sigma must be a finite number > 0, '
     r'got -1'),
    ('perturbations.12.sigma', [0.5, float('nan')],
     entry('perturbations', 12) + r'sigma.* got nan'),
    ('perturbations.7.eps', [0.5, -1.0],
     entry('perturbations', 7) + r'eps.* got -1\.0'),
]


@pytest.mark.parametrize('key, value, match', BAD_ENTRIES,
                         ids=['n0_above_n', 'smoothing_sigma',
                              'noise_sigma', 'pgd_eps'])
def test_bad_evaluation_entry_is_named(avdigits_tiny, tmp_path, key, value,
                                       match):
    """test_cfg entries are checked when the test loop is built, before the
    first batch; the message says which entry of the list is wrong."""
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path))
    cfg.merge_from_dict({f'test_cfg.{key}': value})
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=match):
        runner.test()


OFFLINE_URL = 'https://download.pytorch.org/models/resnet18-f37072fd.pth'


def test_offline_pretrained_url_names_url_branch_and_fix(tmp_path,
                                                         monkeypatch):
    """A stock branch given as a config file reference whose backbone has
    pretrained='torchvision://...' on a machine without network."""
    import urllib.error

    import mmengine.runner.checkpoint as checkpoint

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError('[Errno -2] Name or service not known')

    # torchvision's model zoo without torchvision, and no network.
    monkeypatch.setattr(checkpoint, 'get_torchvision_models',
                        lambda: dict(resnet18=OFFLINE_URL))
    monkeypatch.setattr(checkpoint, 'load_from_http', offline)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    stock = tmp_path / 'tsn_r18.py'
    stock.write_text(
        "model = dict(type='Recognizer2D', backbone=dict(type='ResNet', "
        "depth=18, pretrained='torchvision://resnet18'), cls_head=dict("
        "type='TSNHead', num_classes=3, in_channels=512))\n")
    model = MODELS.build(dict(
        type='CRMTRecognizer',
        encoders=dict(visual=dict(input_key='imgs', recognizer=str(stock)),
                      audio=dict(input_key='audios', feat_dim=8,
                                 backbone=dict(type='ConvEncoder',
                                               in_channels=1,
                                               input_size=(8, 8),
                                               channels=(4, ), feat_dim=8))),
        head=dict(type='CRMTHead', num_classes=3),
        data_preprocessor=dict(type='MultiModalDataPreprocessor',
                               preprocessors=dict(audios=dict(
                                   type='ActionDataPreprocessor')))))
    with pytest.raises(RuntimeError) as info:
        model.init_weights()
    message = str(info.value)
    cache = osp.join(str(tmp_path / 'torch'), 'hub', 'checkpoints')
    for part in ("encoders.visual: initialising the backbone from "
                 "'torchvision://resnet18' failed: URLError",
                 f'copy resnet18-f37072fd.pth (from {OFFLINE_URL}) into '
                 f'{cache}',
                 'set model.encoders.visual.recognizer.backbone.pretrained='
                 'None', "give recognizer=dict(...) with that file's model"):
        assert part in message


def renamed_audio_key(cfg):
    """The encoder's input_key and its preprocessor renamed to 'aud'; the
    data still yields 'audios'."""
    cfg.model.encoders.audio.input_key = 'aud'
    entries = cfg.model.data_preprocessor.preprocessors
    entries['aud'] = entries.pop('audios')
    cfg.default_hooks.pop('norm_check')  # it would look for 'audios'
    return cfg


KEYS = (r"the data provides inputs \['audios', 'imgs'\] but the model "
        r"expects \['aud', 'imgs'\] \(modalities \{'aud': 'audio', 'imgs': "
        r"'visual'\}; data_preprocessor\.preprocessors has \['aud', 'imgs'\]"
        r"\); the data's keys come from ")
RENAME = (r"the preprocessors keys \(here: rename the model's 'aud' to "
          r"'audios' in the encoder and the preprocessors, or collect 'aud' "
          r"in the pipeline\)")


@pytest.mark.parametrize('stage', ['train', 'test'])
def test_renamed_input_key_names_both_key_sets_before_the_first_batch(
        avdigits_tiny, tmp_path, stage):
    cfg = renamed_audio_key(tiny_config('crmt_avdigits.py', avdigits_tiny,
                                        str(tmp_path)))
    runner = Runner.from_cfg(cfg)
    where = dict(train='train_dataloader', test='test_dataloader')[stage]
    with pytest.raises(ValueError, match=(
            KEYS + rf"PackActionInputs\(collect_keys=\.\.\.\) of the {where} "
            r"pipeline\. .*" + RENAME)):
        getattr(runner, stage)()  # raised as the loop is built


def test_renamed_input_key_at_the_first_batch_of_a_stock_loop(
        avdigits_tiny, tmp_path):
    """mmengine's own ValLoop has no pipeline check: the data
    preprocessor's first batch names both key sets (no bare KeyError)."""
    cfg = renamed_audio_key(tiny_config('crmt_avdigits.py', avdigits_tiny,
                                        str(tmp_path)))
    with pytest.raises(ValueError, match=(
            KEYS + r"the batch \(PackActionInputs' collect_keys\)\. .*" +
            RENAME)):
        Runner.from_cfg(cfg).val()


TSN_R18 = dict(type='Recognizer2D',
               backbone=dict(type='ResNet', depth=18, pretrained=None),
               cls_head=dict(type='TSNHead', num_classes=10, in_channels=512))


def test_2d_stock_branch_fed_ncthw_clips_names_branch_layouts_and_fix(
        avdigits_tiny, tmp_path):
    """A TSN branch with the AV-Digits pipeline (FormatShape NCTHW): the
    stock preprocessor entry (NCHW) is used, the pipeline disagrees."""
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, str(tmp_path))
    cfg.model.encoders.visual = dict(input_key='imgs', recognizer=TSN_R18)
    cfg.model.data_preprocessor.preprocessors.pop('imgs')
    cfg.default_hooks.pop('norm_check')  # TSN's mean/std: not the data's
    runner = Runner.from_cfg(cfg)
    fix = (r"Fix: FormatShape\(input_format='NCHW'\) in the pipeline \(and "
           r"format_shape='NCHW' in its data_preprocessor entry.*\), or a "
           r"3-D recognizer \(Recognizer3D: .*\) for NCTHW clips\.")
    with pytest.raises(ValueError, match=(
            r"encoders\.visual is a stock Recognizer2D branch; it takes NCHW inputs, batches \[B, segments, C, H, W\]"
            r".*; but the train_dataloader pipeline's FormatShape gives "
            r"input_format='NCTHW' \(\[B, clips, C, T, H, W\].*\)\. " + fix)):
        runner.train()
    # The same data reaching the branch (a loop without the check).
    with pytest.raises(ValueError, match=(
            r"encoders\.visual is a stock Recognizer2D .* but the batch has "
            r"shape \[4, 1, 3, 3, 32, 32\] \(6 dims, not 5\)\. " + fix)):
        runner.model.encoders.visual(torch.zeros(4, 1, 3, 3, 32, 32))


def listing(folder):
    """Every file under ``folder`` with its mtime (ns)."""
    return {osp.relpath(osp.join(d, f), folder):
            os.stat(osp.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(folder) for f in files}


def test_work_dir_option_decides_where_tools_test_writes(avdigits_tiny,
                                                          tmp_path):
    """tools/test.py on the config a run dumped into its folder (whose
    test_cfg.report_dir names that folder, as tools/demo.py writes it) with
    another --work-dir: the run's folder is left exactly as it was."""
    run = str(tmp_path / 'run')
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, run)
    cfg.test_cfg = dict(type='RobustTestLoop', report_dir=run,
                        perturbations=[dict(type='MissingModality',
                                            modality='audio')])
    config = osp.join(run, 'crmt_avdigits.py')
    cfg.dump(config)
    checkpoint = osp.join(run, 'epoch_1.pth')
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict(),
                    meta={}), checkpoint)
    before = listing(run)
    other = str(tmp_path / 'other')
    load_tool('test').main([config, checkpoint, '--work-dir', other])
    assert listing(run) == before
    assert osp.isfile(osp.join(other, 'robustness.json'))


def test_work_dir_option_moves_every_output_path_cfg_options_decide(
        tmp_path):
    """tools/train.py: the config's output paths inside its work dir keep
    their place under --work-dir, others move into it; --cfg-options wins."""
    old, new = str(tmp_path / 'old'), str(tmp_path / 'new')
    config = str(tmp_path / 'run.py')
    Config(dict(
        work_dir=old,
        test_cfg=dict(type='RobustTestLoop', report_dir=old),
        val_cfg=dict(type='RobustValLoop', report_dir=osp.join(old, 'val')),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           out_dir='/shared/ckpts')),
        custom_hooks=[dict(type='RobustEvalHook',
                           report_dir=osp.join(old, 'robust'))])).dump(config)
    train = load_tool('train')
    cfg = train.merge_args(Config.fromfile(config), train.parse_args(
        [config, '--work-dir', new]))
    assert cfg.work_dir == new
    assert cfg.test_cfg.report_dir == new
    assert cfg.val_cfg.report_dir == osp.join(new, 'val')
    assert cfg.default_hooks.checkpoint.out_dir == osp.join(new, 'ckpts')
    assert cfg.custom_hooks[0].report_dir == osp.join(new, 'robust')
    asked = str(tmp_path / 'asked')
    cfg = train.merge_args(Config.fromfile(config), train.parse_args(
        [config, '--work-dir', new, '--cfg-options',
         f'test_cfg.report_dir={asked}']))
    assert cfg.test_cfg.report_dir == asked
    # Without --work-dir the config's own paths stand.
    cfg = train.merge_args(Config.fromfile(config),
                           train.parse_args([config]))
    assert (cfg.work_dir, cfg.test_cfg.report_dir) == (old, old)


def test_pipeline_without_collect_keys_is_named():
    """PackActionInputs without collect_keys packs one tensor; the model
    needs a dict keyed by its encoders' input keys."""
    from mmaction.datasets.transforms import PackActionInputs
    from mmcv.transforms import Compose

    class Dataset:
        pipeline = Compose([PackActionInputs()])

    with pytest.raises(ValueError, match=(
            r"val_dataloader: PackActionInputs has no collect_keys.*input_key "
            r"\['audios', 'imgs'\]; set collect_keys to those keys")):
        build('crmt_avdigits.py').check_data_pipeline(Dataset(),
                                                      'val_dataloader')
