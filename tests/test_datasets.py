"""Tests of the AV-Digits generator, AudioVisualDataset and LoadCRMTAudio."""
import csv
import filecmp
import json
import os
import os.path as osp
import runpy
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import crmt_mm.compat  # noqa: E402,F401  (must precede mmaction imports)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from mmaction.registry import DATASETS, MODELS  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from crmt_mm.data_prep import load_audio_bank, prepare_avdigits  # noqa: E402
from crmt_mm.data_prep.avdigits import (log_mel_spectrogram,  # noqa: E402
                                        mulaw_decode, mulaw_encode)
from crmt_mm.data_prep.mel import mel_filterbank  # noqa: E402
from crmt_mm.datasets import AudioVisualDataset, LoadCRMTAudio  # noqa: E402


@pytest.fixture(autouse=True, scope='module')
def mmaction_scope():
    # What `default_scope='mmaction'` does in a config: resolve mmaction's
    # own transforms (UniformSample, ...) by their plain names.
    init_default_scope('mmaction')


def avdigits_pipeline(test_mode, sampler='UniformSample'):
    if sampler == 'UniformSample':
        sample = dict(type='UniformSample', clip_len=3, num_clips=1,
                      test_mode=test_mode)
    else:
        # what configs/_base_/datasets/avdigits.py uses: all 3 frames
        sample = dict(type='SampleFrames', clip_len=3, frame_interval=1,
                      num_clips=1, test_mode=test_mode)
    return [
        sample,
        dict(type='RawFrameDecode'),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='LoadCRMTAudio', audio_shape=(64, 64)),
        dict(type='PackActionInputs', collect_keys=('imgs', 'audios')),
    ]


def tree_files(root):
    out = []
    for dirpath, _, files in os.walk(root):
        out += [osp.relpath(osp.join(dirpath, f), root) for f in files]
    return sorted(out)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """20 train / 10 test clips, seed 0."""
    out = str(tmp_path_factory.mktemp('avdigits') / 'tiny')
    info = prepare_avdigits(out, seed=0, train_per_class=2, test_per_class=1)
    return info


# --------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------
def test_prepare_writes_documented_formats(tiny):
    out = tiny['out_dir']
    assert tiny['num_clips'] == dict(train=20, test=10)
    assert not tiny['skipped']
    for split, n in (('train', 20), ('test', 10)):
        with open(osp.join(out, f'avdigits_{split}.txt')) as f:
            lines = [line.split() for line in f]
        assert len(lines) == n
        labels = sorted(int(label) for _, _, label in lines)
        assert labels == sorted(list(range(10)) * (n // 10))
        for clip, frames, label in lines:
            assert frames == '3'
            frame_dir = osp.join(out, 'rawframes', split, clip)
            assert sorted(os.listdir(frame_dir)) == [
                'img_00001.png', 'img_00002.png', 'img_00003.png'
            ]
            img = cv2.imread(osp.join(frame_dir, 'img_00002.png'),
                             cv2.IMREAD_UNCHANGED)
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8
            # grey replicated into the three channels
            assert (img[..., 0] == img[..., 1]).all()
            assert (img[..., 0] == img[..., 2]).all()
            audio = np.load(osp.join(out, 'audio', split, clip + '.npy'))
            assert audio.shape == (64, 64) and audio.dtype == np.float32
            assert np.isfinite(audio).all()
    with open(osp.join(out, 'avdigits_norm.json')) as f:
        norm = json.load(f)
    assert norm == tiny['norm']
    assert norm['audio']['std'] > 0 and 0 < norm['visual']['mean'] < 255
    train = np.stack([
        np.load(osp.join(out, 'audio', 'train', f))
        for f in os.listdir(osp.join(out, 'audio', 'train'))
    ])
    # normalised with the train split's own constants
    assert abs(train.mean()) < 1e-3 and abs(train.std() - 1) < 1e-3


def test_prepare_is_deterministic_and_cached(tiny, tmp_path):
    again = prepare_avdigits(
        str(tmp_path / 'b'), seed=0, train_per_class=2, test_per_class=1)
    files = tree_files(tiny['out_dir'])
    assert files == tree_files(again['out_dir'])
    _, mismatch, errors = filecmp.cmpfiles(
        tiny['out_dir'], again['out_dir'], files, shallow=False)
    assert not mismatch and not errors

    meta = osp.join(again['out_dir'], 'meta.json')
    stamp = os.stat(meta).st_mtime_ns
    cached = prepare_avdigits(
        str(tmp_path / 'b'), seed=0, train_per_class=2, test_per_class=1)
    assert cached['skipped'] and os.stat(meta).st_mtime_ns == stamp
    assert cached['norm'] == again['norm']

    # other arguments: regenerated, stale clips removed
    other = prepare_avdigits(
        str(tmp_path / 'b'), seed=1, train_per_class=1, test_per_class=1)
    assert not other['skipped']
    assert other['num_clips'] == dict(train=10, test=10)
    assert len(os.listdir(osp.join(tmp_path, 'b', 'rawframes', 'train'))) \
        == 10
    assert not filecmp.cmp(
        osp.join(tiny['out_dir'], 'avdigits_test.txt'),
        osp.join(tmp_path, 'b', 'avdigits_test.txt'),
        shallow=False)


def test_subset_clips_match_larger_set(tiny, tmp_path):
    """Each clip has its own generator: subsets hold the same frames."""
    bigger = prepare_avdigits(
        str(tmp_path / 'c'), seed=0, train_per_class=3, test_per_class=1)
    small = os.listdir(osp.join(tiny['out_dir'], 'rawframes', 'train'))
    large = os.listdir(osp.join(bigger['out_dir'], 'rawframes', 'train'))
    assert set(small) < set(large)
    clip = min(small)
    for name in ('img_00001.png', 'img_00003.png'):
        assert filecmp.cmp(
            osp.join(tiny['out_dir'], 'rawframes', 'train', clip, name),
            osp.join(bigger['out_dir'], 'rawframes', 'train', clip, name),
            shallow=False)


def test_speakers_follow_split(tiny):
    bank = load_audio_bank()
    assert (bank['split'] == 'train').sum() == 45
    assert (bank['split'] == 'test').sum() == 15
    assert not set(bank['variant'][bank['split'] == 'train']) & set(
        bank['variant'][bank['split'] == 'test'])
    for split in ('train', 'test'):
        path = osp.join(tiny['out_dir'], f'avdigits_{split}_sources.csv')
        with open(path) as f:
            rows = list(csv.DictReader(f))
        assert {bank['split'][int(r['speaker'])] for r in rows} == {split}
        for r in rows:
            length = len(bank['waves'][int(r['speaker'])][int(r['label'])])
            assert 0 <= int(r['onset_samples']) <= 8320 - length


def test_prepare_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='train_per_class=500'):
        prepare_avdigits(str(tmp_path / 'x'), train_per_class=500)
    with pytest.raises(ValueError, match='test_per_class=0'):
        prepare_avdigits(str(tmp_path / 'x'), test_per_class=0)
    with pytest.raises(FileNotFoundError, match='no_bank.npz'):
        prepare_avdigits(
            str(tmp_path / 'x'), bank_path=str(tmp_path / 'no_bank.npz'))


def test_prepare_cli(tmp_path, monkeypatch, capsys):
    tool = osp.join(REPO_ROOT, 'tools', 'data', 'prepare_avdigits.py')
    out = str(tmp_path / 'cli')
    monkeypatch.setattr(sys, 'argv', [
        tool, out, '--seed', '3', '--train-per-class', '1',
        '--test-per-class', '1'
    ])
    runpy.run_path(tool, run_name='__main__')
    assert '10 train / 10 test clips' in capsys.readouterr().out
    with open(osp.join(out, 'meta.json')) as f:
        assert json.load(f)['args']['seed'] == 3


def test_mulaw_and_mel_helpers():
    x = np.linspace(-1, 1, 1001)
    err = np.abs(mulaw_decode(mulaw_encode(x)) - x)
    # mu-law: the error grows with the amplitude (~2.2 % of |x| + 1/mu)
    assert (err <= 0.025 * (np.abs(x) + 1 / 255)).all()

    fbank = mel_filterbank(8000, 512, 64, 20.0, 4000.0)
    assert fbank.shape == (257, 64)
    assert (fbank.sum(axis=0) > 0).all() and fbank.max() <= 1.0
    # a 1 kHz tone peaks in the band whose centre is nearest to 1 kHz
    t = np.arange(8320) / 8000.0
    feat = log_mel_spectrogram(np.sin(2 * np.pi * 1000 * t)[None])
    assert feat.shape == (1, 64, 64) and feat.dtype == np.float32
    centres = np.argmax(fbank, axis=0) * 8000 / 512
    peak = feat[0].mean(axis=0).argmax()
    assert abs(centres[peak] - 1000) < 60


# --------------------------------------------------------------------------
# dataset + real pipeline
# --------------------------------------------------------------------------
@pytest.mark.parametrize('test_mode,sampler',
                         [(True, 'UniformSample'), (False, 'UniformSample'),
                          (False, 'SampleFrames')])
def test_dataset_with_mmaction_pipeline(tiny, test_mode, sampler):
    out = tiny['out_dir']
    dataset = DATASETS.build(
        dict(
            type='AudioVisualDataset',
            ann_file='avdigits_test.txt',
            data_root=out,
            data_prefix=dict(img='rawframes/test', audio='audio/test'),
            pipeline=avdigits_pipeline(test_mode, sampler),
            num_classes=10,
            test_mode=test_mode))
    assert isinstance(dataset, AudioVisualDataset) and len(dataset) == 10
    with open(osp.join(out, 'avdigits_test.txt')) as f:
        first = f.readline().split()
    info = dataset.get_data_info(0)
    assert info['frame_dir'] == osp.join(out, 'rawframes', 'test', first[0])
    assert info['audio_path'] == osp.join(out, 'audio', 'test',
                                          first[0] + '.npy')
    assert info['total_frames'] == 3 and info['start_index'] == 1
    assert info['filename_tmpl'] == 'img_{:05d}.png'
    assert info['modality'] == 'RGB'

    sample = dataset[0]
    imgs, audios = sample['inputs']['imgs'], sample['inputs']['audios']
    assert imgs.shape == (1, 3, 3, 32, 32) and imgs.dtype == torch.uint8
    assert audios.shape == (1, 1, 64, 64) and audios.dtype == torch.float32
    expected = np.load(info['audio_path'])
    assert torch.equal(audios[0, 0], torch.from_numpy(expected))
    assert sample['data_samples'].gt_label.item() == int(first[2])
    # frames arrive as written (RGB, channel-first), in the sampled order
    frame_inds = {'UniformSample': [1, 2, 2], 'SampleFrames': [1, 2, 3]}
    if test_mode or sampler == 'SampleFrames':
        for t, index in enumerate(frame_inds[sampler]):
            png = cv2.imread(
                osp.join(info['frame_dir'], f'img_{index:05d}.png'))
            assert torch.equal(imgs[0, :, t],
                               torch.from_numpy(png).permute(2, 0, 1))


def test_batch_through_data_preprocessor(tiny):
    out, norm = tiny['out_dir'], tiny['norm']['visual']
    dataset = DATASETS.build(
        dict(
            type='AudioVisualDataset',
            ann_file=osp.join(out, 'avdigits_train.txt'),
            data_prefix=dict(
                img=osp.join(out, 'rawframes', 'train'),
                audio=osp.join(out, 'audio', 'train')),
            pipeline=avdigits_pipeline(False)))
    batch = pseudo_collate([dataset[i] for i in range(4)])
    preprocessor = MODELS.build(
        dict(
            type='MultiModalDataPreprocessor',
            preprocessors=dict(
                imgs=dict(
                    type='ActionDataPreprocessor',
                    mean=[norm['mean']] * 3,
                    std=[norm['std']] * 3,
                    format_shape='NCTHW'),
                audios=dict(type='ActionDataPreprocessor'))))
    data = preprocessor(batch, training=True)
    assert data['inputs']['imgs'].shape == (4, 1, 3, 3, 32, 32)
    assert data['inputs']['audios'].shape == (4, 1, 1, 64, 64)
    assert data['inputs']['imgs'].dtype == torch.float32
    assert len(data['data_samples']) == 4


# --------------------------------------------------------------------------
# dataset validation errors
# --------------------------------------------------------------------------
def make_av(root, num=3, audio_shape=(64, 64)):
    """A hand-made valid dataset: clips c0..c{num-1}, 3 frames each."""
    img_root, audio_root = osp.join(root, 'img'), osp.join(root, 'aud')
    os.makedirs(audio_root)
    lines = []
    for i in range(num):
        os.makedirs(osp.join(img_root, f'c{i}'))
        for t in (1, 2, 3):
            cv2.imwrite(
                osp.join(img_root, f'c{i}', f'img_{t:05d}.png'),
                np.full((8, 8, 3), 10 * t, np.uint8))
        np.save(
            osp.join(audio_root, f'c{i}.npy'),
            np.full(audio_shape, i, np.float32))
        lines.append(f'c{i} 3 {i}')
    ann = osp.join(root, 'list.txt')
    write_lines(ann, lines)
    return ann, dict(img=img_root, audio=audio_root)


def write_lines(path, lines):
    with open(path, 'w') as f:
        f.write(''.join(line + '\n' for line in lines))


def build(ann, prefix, **kwargs):
    cfg = dict(type='AudioVisualDataset', ann_file=ann, data_prefix=prefix,
               pipeline=[], num_classes=10)
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_valid_hand_made_dataset(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    assert len(build(ann, prefix)) == 3
    # a leading axis of size 1 is accepted
    np.save(osp.join(prefix['audio'], 'c1.npy'), np.zeros((1, 64, 64)))
    assert len(build(ann, prefix)) == 3
    # audio_shape=None skips the shape check
    np.save(osp.join(prefix['audio'], 'c1.npy'), np.zeros((5, 7)))
    assert len(build(ann, prefix, audio_shape=None)) == 3


def test_missing_frame_file(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    os.remove(osp.join(prefix['img'], 'c1', 'img_00002.png'))
    with pytest.raises(FileNotFoundError,
                       match=r"(?s)line 2: 1 of 3 frames missing.*"
                       r"'img_00002.png'.*filename_tmpl"):
        build(ann, prefix)


def test_missing_frame_dir_and_too_few_frames(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    write_lines(ann, ['c0 4 0', 'c9 3 1'])
    with pytest.raises(FileNotFoundError) as err:
        build(ann, prefix)
    msg = str(err.value)
    assert "line 1: 1 of 4 frames missing" in msg and 'img_00004.png' in msg
    assert 'line 2: frame directory' in msg and 'c9' in msg
    assert "c9.npy' not found" in msg


def test_missing_audio_file(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    os.remove(osp.join(prefix['audio'], 'c2.npy'))
    with pytest.raises(FileNotFoundError,
                       match=r"(?s)line 3: audio file .*c2\.npy' not found"):
        build(ann, prefix)


def test_wrong_audio_shape(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    np.save(osp.join(prefix['audio'], 'c0.npy'), np.zeros((32, 64)))
    with pytest.raises(ValueError,
                       match=r"(?s)line 1: .*c0\.npy' has shape \(32, 64\), "
                       r"expected \(64, 64\).*set audio_shape"):
        build(ann, prefix)
    with open(osp.join(prefix['audio'], 'c0.npy'), 'w') as f:
        f.write('not an array')
    with pytest.raises(ValueError, match=r"cannot read audio file .*c0\.npy"):
        build(ann, prefix)


def test_missing_and_empty_annotation_file(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='nope.txt.*not found'):
        build(osp.join(str(tmp_path), 'nope.txt'), prefix)
    write_lines(ann, ['', '   '])
    with pytest.raises(ValueError, match='list.txt.* is empty'):
        build(ann, prefix)


def test_label_out_of_range(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    write_lines(ann, ['c0 3 0', 'c1 3 10', 'c2 3 -1'])
    with pytest.raises(ValueError) as err:
        build(ann, prefix)
    msg = str(err.value)
    assert "line 2: clip 'c1' has label 10 out of range, num_classes=10" in msg
    assert "line 3: clip 'c2' has label -1" in msg
    assert 'labels must be integers in [0, num_classes)' in msg
    # without num_classes any label >= 0 is fine
    write_lines(ann, ['c0 3 0', 'c1 3 10'])
    assert len(build(ann, prefix, num_classes=None)) == 2


def test_duplicated_clip_id(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    write_lines(ann, ['c0 3 0', 'c1 3 1', 'c0 3 0'])
    with pytest.raises(ValueError,
                       match="line 3: clip id 'c0' already listed on line 1"):
        build(ann, prefix)


def test_malformed_lines(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    write_lines(ann, ['c0 3 0', 'c1 3', 'c2 three 2', 'c0 3 0 7'])
    with pytest.raises(ValueError) as err:
        build(ann, prefix)
    msg = str(err.value)
    for lineno, text in ((2, 'c1 3'), (3, 'c2 three 2'), (4, 'c0 3 0 7')):
        assert f"line {lineno}: cannot parse '{text}'" in msg
    assert '<frame_dir> <total_frames> <label>' in msg


def test_many_problems_are_summarised(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    write_lines(ann, [f'x{i} 3 0' for i in range(15)])
    with pytest.raises(FileNotFoundError) as err:
        build(ann, prefix)
    # 15 missing dirs + 15 missing audio files: the first 10 are listed
    assert '30 problem(s)' in str(err.value)
    assert '... and 20 more' in str(err.value)


def test_dataset_rejects_bad_arguments(tmp_path):
    ann, prefix = make_av(str(tmp_path))
    with pytest.raises(ValueError, match=r"data_prefix lacks the keys \['audio'\]"):
        build(ann, dict(img=prefix['img']))
    with pytest.raises(ValueError, match='filename_tmpl'):
        build(ann, prefix, filename_tmpl='img_{}_{}.png')


# --------------------------------------------------------------------------
# LoadCRMTAudio
# --------------------------------------------------------------------------
def test_load_crmt_audio(tmp_path):
    path = str(tmp_path / 'a.npy')
    np.save(path, np.arange(64 * 64, dtype=np.float64).reshape(1, 64, 64))
    out = LoadCRMTAudio()(dict(audio_path=path))
    assert out['audios'].shape == (1, 1, 64, 64)
    assert out['audios'].dtype == np.float32
    assert out['audios'][0, 0, 1, 0] == 64

    with pytest.raises(FileNotFoundError, match='missing.npy'):
        LoadCRMTAudio()(dict(audio_path=str(tmp_path / 'missing.npy')))

    bad = np.zeros((64, 64), np.float32)
    bad[3, 4] = np.nan
    np.save(path, bad)
    with pytest.raises(ValueError, match=r'a\.npy.* 1 NaN/Inf'):
        LoadCRMTAudio()(dict(audio_path=path))

    np.save(path, np.zeros((64, 32), np.float32))
    with pytest.raises(ValueError,
                       match=r'a\.npy.* shape \(64, 32\), expected'):
        LoadCRMTAudio()(dict(audio_path=path))
    out = LoadCRMTAudio(audio_shape=None)(dict(audio_path=path))
    assert out['audios'].shape == (1, 1, 64, 32)

    np.save(path, np.array([{'a': 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r'cannot read .*a\.npy'):
        LoadCRMTAudio()(dict(audio_path=path))
