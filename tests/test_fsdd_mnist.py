"""FSDD-MNIST: the prep tool on WAV and idx files written here (always run),
on a small subset of the real data (skipped without it), every bad-input
case, and a tiny train-and-test run on the real subset (slow)."""
import csv
import gzip
import json
import os
import os.path as osp
import shutil
import sys

import numpy as np
import pytest
from mmengine.config import Config

from helpers import ROOT, cheap_evaluation, config_path
from helpers_fsdd_mnist import (make_fsdd, make_mnist, tone, write_idx,
                                write_wav)

sys.path.insert(0, osp.join(ROOT, 'tools', 'data'))
import prepare_fsdd_mnist as prep  # noqa: E402

#: The real data, when this checkout sits beside it (CI has it).
SHARED_DATA = osp.join(osp.dirname(ROOT), 'shared', 'data')
REAL_FSDD = osp.join(SHARED_DATA, 'fsdd', 'recordings')
REAL_MNIST = osp.join(SHARED_DATA, 'mnist')
needs_real_data = pytest.mark.skipif(
    not (osp.isdir(REAL_FSDD) and osp.isdir(REAL_MNIST)),
    reason=f'real FSDD/MNIST data not found at {SHARED_DATA} (fsdd/'
    'recordings and mnist/); the same code is covered on generated files')


@pytest.fixture
def raw(tmp_path):
    return (make_fsdd(tmp_path / 'fsdd'), make_mnist(tmp_path / 'mnist'),
            str(tmp_path / 'out'))


def run(fsdd, mnist, out, *extra):
    return prep.main(['--fsdd', fsdd, '--mnist', mnist, '--out', out,
                      '--val-takes', '1', *extra])


def read_list(out, split):
    with open(osp.join(out, f'fsdd_mnist_{split}.txt')) as f:
        return [line.split() for line in f]


def read_sources(out, split):
    with open(osp.join(out, f'fsdd_mnist_{split}_sources.csv')) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ layout
def test_standard_split_layout_pairing_and_constants(raw):
    fsdd, mnist, out = raw
    meta = run(fsdd, mnist, out)
    # takes 0-4 test, 1 of takes 5-6 val, the other train (2 speakers x 10)
    assert meta['num_clips'] == dict(train=20, val=20, test=100)
    test = read_sources(out, 'test')
    assert {int(r['take']) for r in test} == set(range(5))
    for split in prep.MAIN_SPLITS:
        rows = read_list(out, split)
        sources = read_sources(out, split)
        assert [r[0] for r in rows] == [s['clip_id'] for s in sources]
        for (clip, frames, label), src in zip(rows, sources):
            assert frames == '1' and clip.startswith(label + '_')
            assert src['recording'] == clip + '.wav'
            assert osp.isfile(osp.join(out, 'rawframes', split, clip,
                                       'img_00001.png'))
            feature = np.load(osp.join(out, 'audio', split, clip + '.npy'))
            assert feature.shape == (96, 128) and feature.dtype == np.float32
    # each recording gets an image of its own digit, pools are disjoint
    labels = prep.read_mnist_pair(mnist, 't10k')[2]
    used = {}
    for split in prep.MAIN_SPLITS:
        for src in read_sources(out, split):
            assert labels[int(src['mnist_index'])] == int(src['label'])
            used.setdefault(split, set()).add(int(src['mnist_index']))
    assert not used['train'] & used['val']
    assert not used['train'] & used['test']
    assert not used['val'] & used['test']
    # audio is stored normalised by the training split's constants
    train = np.stack([np.load(osp.join(out, 'audio', 'train', c + '.npy'))
                      for c, _, _ in read_list(out, 'train')])
    assert abs(train.mean()) < 1e-4 and abs(train.std() - 1) < 1e-4
    with open(osp.join(out, 'fsdd_mnist_norm.json')) as f:
        norm = json.load(f)
    assert set(norm) == {'audio', 'visual'}


def test_pca_keeps_a_quarter_of_the_variance_fitted_on_train_only(raw):
    fsdd, mnist, out = raw
    meta = run(fsdd, mnist, out)
    assert meta['pca']['explained_variance'] >= 0.25
    pools = prep.image_pools(mnist, prep.IMAGE_SPLIT, 0)
    train = np.stack([item[2] for item in pools['train']])
    reference = prep.fit_pca(train, 0.25)
    with np.load(osp.join(out, prep.PCA_FILE)) as saved:
        np.testing.assert_allclose(saved['components'],
                                   reference['components'])
    # brute force: the k-th component adds the variance that crosses 25 %
    x = train.reshape(len(train), -1).astype(np.float64)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    share = np.cumsum(eig) / eig.sum()
    k = meta['pca']['components']
    assert share[k - 1] >= 0.25 - 1e-9 and (k == 1 or share[k - 2] < 0.25)
    # a degraded image is the projection on those components
    image = pools['test'][0][2]
    back = prep.degrade(image, reference)
    assert back.shape == image.shape and back.dtype == np.uint8
    off = back.astype(float).ravel() - reference['mean']
    residual = off - reference['components'].T @ (
        reference['components'] @ off)
    assert np.abs(residual).max() < 1.0  # rounding and clipping only


def test_resume_is_idempotent_and_other_settings_are_refused(raw, capsys):
    fsdd, mnist, out = raw
    run(fsdd, mnist, out)
    before = open(osp.join(out, 'fsdd_mnist_train.txt')).read()
    run(fsdd, mnist, out)
    assert 'up to date' in capsys.readouterr().out
    assert open(osp.join(out, 'fsdd_mnist_train.txt')).read() == before
    with pytest.raises(ValueError, match='other settings.*seed'):
        run(fsdd, mnist, out, '--seed', '1')


def test_speaker_split_holds_whole_speakers_out(raw):
    fsdd, mnist, out = raw
    meta = run(fsdd, mnist, out, '--split', 'speaker', '--test-speakers',
               'bob')
    assert meta['speakers'] == dict(train=['alice'], val=['alice'],
                                    test=['bob'])
    assert meta['num_clips'] == dict(train=60, val=10, test=70)


def test_extra_test_set_never_changes_the_training_split(raw, tmp_path):
    fsdd, mnist, out = raw
    run(fsdd, mnist, out)
    train = {n: open(osp.join(out, n), 'rb').read()
             for n in ('fsdd_mnist_train.txt', 'fsdd_mnist_norm.json')}
    clip = read_list(out, 'train')[0][0]
    feature = np.load(osp.join(out, 'audio', 'train', clip + '.npy'))
    other = make_fsdd(tmp_path / 'carol', speakers=('carol', ), takes=2)
    images = make_mnist(tmp_path / 'mnist2', per_digit=3, seed=5)
    run(fsdd, mnist, out, '--extra-test', f'carol={other},{images}')
    assert len(read_list(out, 'carol')) == 20
    for name, content in train.items():
        assert open(osp.join(out, name), 'rb').read() == content
    np.testing.assert_array_equal(
        np.load(osp.join(out, 'audio', 'train', clip + '.npy')), feature)
    assert {r['speaker'] for r in read_sources(out, 'carol')} == {'carol'}


def test_audio_noise_is_optional_and_seeded(raw):
    fsdd, mnist, out = raw
    run(fsdd, mnist, out)
    noisy = out + '_noisy'
    run(fsdd, mnist, noisy, '--audio-snr', '0')
    clip = read_list(out, 'test')[0][0]
    clean = np.load(osp.join(out, 'audio', 'test', clip + '.npy'))
    with_noise = np.load(osp.join(noisy, 'audio', 'test', clip + '.npy'))
    assert not np.allclose(clean, with_noise)
    shutil.rmtree(noisy)
    run(fsdd, mnist, noisy, '--audio-snr', '0')
    np.testing.assert_array_equal(
        np.load(osp.join(noisy, 'audio', 'test', clip + '.npy')),
        with_noise)


def test_parallel_workers_give_the_same_features(raw):
    fsdd, mnist, out = raw
    run(fsdd, mnist, out)
    run(fsdd, mnist, out + '_2', '--workers', '2')
    for clip, _, _ in read_list(out, 'val'):
        np.testing.assert_array_equal(
            np.load(osp.join(out, 'audio', 'val', clip + '.npy')),
            np.load(osp.join(out + '_2', 'audio', 'val', clip + '.npy')))


# --------------------------------------------------------------- bad input
def _published(out):
    return osp.isdir(out) and any(
        n.startswith('fsdd_mnist_') or n in ('meta.json', 'rawframes')
        for n in os.listdir(out))


@pytest.mark.parametrize('case, message', [
    ('not_wav', r'not a readable PCM WAV.*convert it'),
    ('empty', r'empty file.*re-download or remove'),
    ('truncated', r'truncated.*re-download or remove'),
    ('rate', r'recorded at 16000 Hz, expected 8000.*--source-rate 0'),
    ('stereo', r'2 channels.*mix it down'),
])
def test_bad_recordings_name_the_file_and_the_fix(raw, case, message):
    fsdd, mnist, out = raw
    bad = osp.join(fsdd, '3_alice_6.wav')
    if case == 'not_wav':
        with open(bad, 'w') as f:
            f.write('this is not audio')
    elif case == 'empty':
        open(bad, 'w').close()
    elif case == 'truncated':
        write_wav(bad, tone(3, 6))
        with open(bad, 'r+b') as f:
            f.truncate(osp.getsize(bad) // 2)
    elif case == 'rate':
        write_wav(bad, tone(3, 6, rate=16000), rate=16000)
    else:
        write_wav(bad, np.repeat(tone(3, 6), 2), channels=2)
    with pytest.raises(SystemExit, match=r'(?s)3_alice_6\.wav.*' + message):
        run(fsdd, mnist, out)
    assert not _published(out)
    with open(osp.join(out, 'errors.log')) as f:
        assert '3_alice_6' in f.read()
    if case == 'truncated':  # --skip-bad leaves it out and goes on
        meta = run(fsdd, mnist, out + '_skip', '--skip-bad')
        assert sum(meta['num_clips'].values()) == 139


def test_bad_file_name_is_refused_before_any_work(raw):
    fsdd, mnist, out = raw
    write_wav(osp.join(fsdd, 'three_alice_1.wav'), tone(3, 1))
    with pytest.raises(SystemExit, match=r'three_alice_1\.wav.*rename'):
        run(fsdd, mnist, out)
    assert not osp.exists(out)


@pytest.mark.parametrize('case, message', [
    ('magic', r't10k-images.*magic number 2049, expected 2051'),
    ('truncated', r't10k-images.*truncated or corrupt, re-download'),
    ('count', r'holds 120 images but .*119 labels'),
    ('missing', r't10k-labels-idx1-ubyte\[\.gz\] is missing'),
])
def test_bad_mnist_files_name_the_file_and_the_fix(raw, case, message):
    fsdd, mnist, out = raw
    images = osp.join(mnist, 't10k-images-idx3-ubyte.gz')
    labels = osp.join(mnist, 't10k-labels-idx1-ubyte.gz')
    if case == 'magic':
        shutil.copy(labels, images)
    elif case == 'truncated':
        data = gzip.open(images).read()
        with gzip.open(images, 'wb') as f:
            f.write(data[:-100])
    elif case == 'count':
        data = gzip.open(labels).read()
        write_idx(labels, np.frombuffer(data[8:-1], np.uint8),
                  prep.LABELS_MAGIC)
    else:
        os.remove(labels)
    with pytest.raises(SystemExit, match=message):
        run(fsdd, mnist, out)
    assert not _published(out)


def test_a_digit_without_recordings_in_a_split_is_named(raw):
    fsdd, mnist, out = raw
    for take in range(5):
        for speaker in ('alice', 'bob'):
            os.remove(osp.join(fsdd, f'7_{speaker}_{take}.wav'))
    with pytest.raises(SystemExit, match=r'test split has no recording of '
                       r'digit\(s\) \[7\].*add recordings'):
        run(fsdd, mnist, out)
    assert not osp.exists(out)


def test_unknown_test_speaker_lists_the_speakers(raw):
    fsdd, mnist, out = raw
    with pytest.raises(SystemExit, match='no such speaker.*alice, bob'):
        run(fsdd, mnist, out, '--split', 'speaker', '--test-speakers', 'x')


# ------------------------------------------------------------- real data
def real_subset(tmp_path, speakers=('george', 'jackson'), takes=range(8)):
    """A small copy of the real FSDD recordings (2 speakers, 8 takes)."""
    folder = tmp_path / 'fsdd_real'
    folder.mkdir()
    for speaker in speakers:
        for digit in range(10):
            for take in takes:
                name = f'{digit}_{speaker}_{take}.wav'
                shutil.copy(osp.join(REAL_FSDD, name), folder / name)
    return str(folder)


@needs_real_data
def test_real_subset_prepares_and_loads_through_the_config(tmp_path):
    fsdd = real_subset(tmp_path)
    out = str(tmp_path / 'out')
    meta = run(fsdd, REAL_MNIST, out)
    assert meta['num_clips'] == dict(train=40, val=20, test=100)
    assert meta['pca']['components'] == 4  # MNIST: 4 reach 25 %
    cfg = Config.fromfile(config_path('crmt_fsdd_mnist.py'))
    from mmaction.registry import DATASETS
    dataset_cfg = dict(cfg.test_dataloader.dataset,
                       ann_file=osp.join(out, 'fsdd_mnist_test.txt'),
                       data_prefix=dict(
                           img=osp.join(out, 'rawframes', 'test'),
                           audio=osp.join(out, 'audio', 'test')))
    import crmt_mm  # noqa: F401  (registers the dataset and transforms)
    from mmengine.registry import init_default_scope
    init_default_scope('mmaction')
    sample = DATASETS.build(dataset_cfg)[0]
    assert tuple(sample['inputs']['imgs'].shape) == (1, 3, 1, 28, 28)
    assert tuple(sample['inputs']['audios'].shape) == (1, 1, 96, 128)


def fsdd_config(name, data_root, work_dir):
    cfg = Config.fromfile(config_path(name))
    for key, split in (('train_dataloader', 'train'),
                       ('val_dataloader', 'val'),
                       ('test_dataloader', 'test')):
        loader = cfg[key]
        loader.dataset.ann_file = osp.join(data_root,
                                           f'fsdd_mnist_{split}.txt')
        loader.dataset.data_prefix = dict(
            img=osp.join(data_root, 'rawframes', split),
            audio=osp.join(data_root, 'audio', split))
        loader.batch_size, loader.num_workers = 16, 0
        loader.persistent_workers = False
    with open(osp.join(data_root, prep.NORM_FILE)) as f:
        visual = json.load(f)['visual']
    imgs = cfg.model.data_preprocessor.preprocessors.imgs
    imgs.mean, imgs.std = [visual['mean']] * 3, [visual['std']] * 3
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    cfg.train_cfg.max_epochs, cfg.train_cfg.val_interval = 2, 100
    cfg.custom_hooks[0].switch_epoch = 1
    cfg.test_cfg.subset = dict(size=8, seed=0, scope='attacks')
    cheap_evaluation(cfg)
    return cfg


@pytest.mark.slow
@needs_real_data
def test_real_subset_trains_and_tests_end_to_end(tmp_path):
    """CRMT on 40 real training clips: step 1, step 2, and the whole
    robustness evaluation of the config (attacks on 8 clips)."""
    from mmengine.runner import Runner
    fsdd = real_subset(tmp_path)
    data = str(tmp_path / 'data')
    run(fsdd, REAL_MNIST, data)
    cfg = fsdd_config('crmt_fsdd_mnist.py', data, str(tmp_path / 'work'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    assert 0.0 <= metrics['robust/clean'] <= 1.0
    for modality in ('audio', 'visual'):
        assert f'robust/missing_{modality}' in metrics
    assert any(k.startswith('robust/aa-') for k in metrics)
    assert float(runner.model.tau.min()) > 0  # step 2 ran


def test_study_script_states_its_usage():
    import subprocess
    done = subprocess.run(['bash', osp.join(ROOT, 'tools',
                                            'fsdd_mnist_study.sh')],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert 'usage:' in done.stderr and 'FSDD_RECORDINGS_DIR' in done.stderr
