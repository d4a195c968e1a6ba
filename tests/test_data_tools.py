"""Dataset preparation tools, CRMT's fbank features and the flow transforms.

The tools run on tiny synthetic videos written by
``tools/data/make_synthetic_videos.py`` (64x48 px, 1.5-3 s).
"""
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
from mmcv.transforms import Compose

from crmt_mm.data_prep import fbank, mel
from helpers import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools', 'data'))
import extraction  # noqa: E402
import make_synthetic_videos as synth  # noqa: E402
import prepare_ks_vggsound as prep_av  # noqa: E402
import prepare_ucf101 as prep_ucf  # noqa: E402

NORMALISED_ZERO = -fbank.FBANK_MEAN / (2 * fbank.FBANK_STD)


def kaldi_fbank_numpy(x, sample_rate, num_bins=128):
    """Independent float64 re-derivation of torchaudio's
    ``compliance.kaldi.fbank`` with the reference's options (25 ms Hanning
    window, 10 ms shift, snip_edges, per-frame DC removal, pre-emphasis
    0.97, power spectrum, mel bins 20 Hz..Nyquist on 1127 ln(1 + f/700),
    log floored at float32 eps; empty bins give log(eps))."""
    x = np.asarray(x, np.float64)
    win, hop = int(sample_rate * 0.025), int(sample_rate * 0.010)
    nfft = 1 << (win - 1).bit_length()
    count = 1 + (len(x) - win) // hop
    frames = np.stack([x[i * hop:i * hop + win] for i in range(count)])
    frames -= frames.mean(axis=1, keepdims=True)
    emphasised = frames.copy()
    emphasised[:, 1:] -= 0.97 * frames[:, :-1]
    emphasised[:, 0] -= 0.97 * frames[:, 0]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / (win - 1))
    power = np.abs(np.fft.rfft(emphasised * window, nfft))**2

    def mel(f):
        return 1127 * np.log(1 + f / 700)

    low, high = mel(20.0), mel(sample_rate / 2)
    step = (high - low) / (num_bins + 1)
    fft_mel = mel(np.arange(nfft // 2) * sample_rate / nfft)
    weights = np.zeros((num_bins, nfft // 2 + 1))
    for b in range(num_bins):
        left, centre, right = low + b * step, low + (b + 1) * step, \
            low + (b + 2) * step
        inside = (fft_mel > left) & (fft_mel < right)
        rise = (fft_mel - left) / (centre - left)
        fall = (right - fft_mel) / (right - centre)
        weights[b, :nfft // 2] = np.where(
            inside, np.where(fft_mel <= centre, rise, fall), 0.0)
    return np.log(np.maximum(power @ weights.T, np.finfo(np.float32).eps))


def tone_with_noise(sample_rate, seconds=0.3, freq=1000.0):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(0).standard_normal(len(t))
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype(
        np.float32)


# ---------------------------------------------------------------- fbank --

@pytest.mark.parametrize('sample_rate', [16000, 22050])
def test_kaldi_fbank_matches_numpy_reference(sample_rate):
    """kaldi-native-fbank (plus the empty-bin bridge) against the numpy
    re-derivation above on a 0.3 s 1 kHz tone with noise: every one of the
    F x 128 log energies agrees within 2e-3 (float32 vs float64)."""
    x = tone_with_noise(sample_rate)
    ours = fbank.kaldi_fbank(x, sample_rate)
    reference = kaldi_fbank_numpy(x, sample_rate)
    assert ours.shape == reference.shape == (28, 128)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 2e-3


def test_empty_mel_bin_at_16k_is_log_eps():
    # 128 bins on a 512-point FFT at 16 kHz leave bin 3 without FFT bins;
    # torchaudio (the reference) emits log(float32 eps) there.
    assert fbank.nonempty_bin_runs(16000, 128) == [(0, 2), (4, 127)]
    assert fbank.nonempty_bin_runs(22050, 128) == [(0, 127)]
    out = fbank.kaldi_fbank(tone_with_noise(16000), 16000)
    assert np.all(out[:, 3] == np.float32(fbank.LOG_EPS))
    assert fbank.LOG_EPS == pytest.approx(-15.942385, abs=1e-6)


def test_crmt_audio_feature_pads_and_normalises():
    x = tone_with_noise(16000)
    feature = fbank.crmt_audio_feature(x, 16000)
    raw = fbank.kaldi_fbank((x - x.astype(np.float64).mean()).astype(
        np.float32), 16000)
    assert feature.shape == (1024, 128) and feature.dtype == np.float32
    np.testing.assert_allclose(feature[:28], (raw + 4.503877) / 10.282552,
                               rtol=1e-6)
    np.testing.assert_allclose(feature[28:], 4.503877 / 10.282552,
                               rtol=1e-6)
    long = fbank.crmt_audio_feature(np.tile(x, 40), 16000)
    assert long.shape == (1024, 128)  # 1198 frames trimmed


# --------------------------------------------- Kinetics-Sounds / VGGSound --

@pytest.fixture(scope='module')
def ks_raw(tmp_path_factory):
    return synth.make_audio_visual(str(tmp_path_factory.mktemp('ks_raw')),
                                   'ks')


def run_ks(raw, out_dir, *extra):
    return prep_av.main([raw['videos'], str(out_dir), '--name', 'ks',
                         '--list', f'train={raw["train"]}', '--list',
                         f'test={raw["test"]}', *extra])


def test_prepare_ks_writes_rawframes_fbank_and_lists(ks_raw, tmp_path,
                                                     capsys):
    out = tmp_path / 'ks'
    results = run_ks(ks_raw, out)
    log = capsys.readouterr().out
    assert '[ks] 9/9 (100.0%) done 6 skipped 0 failed 3' in log
    assert 's per extracted video' in log
    assert {c: r.status for c, r in results.items()} == {
        **{f'clip{i:02d}': 'done' for i in range(6)},
        'corrupt_000000': 'failed', 'noaudio_000000': 'failed',
        'silent_000000': 'failed'}
    # 3 s clips at 1 fps -> frames at 0, 1 and 2 s.
    frames = sorted(os.listdir(out / 'rawframes' / 'clip00'))
    assert frames == ['img_00001.jpg', 'img_00002.jpg', 'img_00003.jpg']
    assert cv2.imread(str(out / 'rawframes' / 'clip00' /
                          'img_00001.jpg')).shape == (48, 64, 3)
    assert (out / 'ks_train.txt').read_text().splitlines() == [
        'clip00 3 0', 'clip01 3 1', 'clip02 3 2', 'clip03 3 0']
    assert (out / 'ks_test.txt').read_text().splitlines() == [
        'clip04 3 1', 'clip05 3 2']
    errors = dict(line.split('\t') for line in
                  (out / 'errors.log').read_text().splitlines()[1:])
    assert set(errors) == {f'{name}_000000' for name in synth.BROKEN}
    for name, reason in synth.BROKEN.items():
        assert reason in errors[f'{name}_000000'].lower(), errors
    assert not (out / extraction.STAGING_DIR).exists()

    feature = np.load(out / 'audio' / 'clip00.npy')
    assert feature.shape == (1024, 128) and feature.dtype == np.float32
    # 3 s at 16 kHz (plus AAC priming) -> about 300 fbank frames, the rest
    # is the normalised zero padding.
    valid = int((feature != feature[-1]).any(axis=1).sum())
    assert feature[-1] == pytest.approx(NORMALISED_ZERO)
    assert 295 <= valid <= 310
    # The 300 Hz tone of label 0 peaks in the mel bin centred nearest it.
    centres = mel.mel_to_hz(
        mel.hz_to_mel(20.0) + np.arange(1, 129) *
        (mel.hz_to_mel(8000.0) - mel.hz_to_mel(20.0)) / 129)
    peak = int(feature[20:valid - 20].mean(axis=0).argmax())
    assert abs(peak - int(np.abs(centres - 300.0).argmin())) <= 1


def test_prepare_ks_resumes_and_guards_settings(ks_raw, tmp_path):
    out = tmp_path / 'ks'
    run_ks(ks_raw, out)
    frame = out / 'rawframes' / 'clip01' / 'img_00001.jpg'
    stamp = frame.stat().st_mtime_ns
    os.remove(out / 'audio' / 'clip02.npy')
    again = run_ks(ks_raw, out)
    assert again['clip02'].status == 'done'
    assert {r.status for c, r in again.items() if c.startswith('clip')
            and c != 'clip02'} == {'skipped'}
    assert frame.stat().st_mtime_ns == stamp
    assert (out / 'ks_train.txt').read_text().startswith('clip00 3 0\n')
    with pytest.raises(ValueError, match='fps: 1.0 -> 2.0'):
        run_ks(ks_raw, out, '--fps', '2')


def test_prepare_vggsound_from_csv(tmp_path):
    raw = synth.make_audio_visual(str(tmp_path / 'raw'), 'vggsound',
                                  num_train=2, num_test=1, seconds=1.0)
    out = tmp_path / 'vggsound'
    prep_av.main([raw['videos'], str(out), '--name', 'vggsound', '--csv',
                  raw['csv'], '--short-side', '24'])
    classes = (out / 'classes.txt').read_text().splitlines()
    assert classes == sorted(synth.VGGSOUND_CLASSES)
    label = {name: i for i, name in enumerate(classes)}
    assert (out / 'vggsound_train.txt').read_text().splitlines() == [
        f'yt00_000000 1 {label[synth.VGGSOUND_CLASSES[0]]}',
        f'yt01_000010 1 {label[synth.VGGSOUND_CLASSES[1]]}']
    assert (out / 'vggsound_test.txt').read_text().splitlines() == [
        f'yt02_000020 1 {label[synth.VGGSOUND_CLASSES[2]]}']
    image = cv2.imread(str(out / 'rawframes' / 'yt00_000000' /
                           'img_00001.jpg'))
    assert image.shape == (24, 32, 3)


def test_annotation_parsing_and_errors(tmp_path):
    good = tmp_path / 'good.txt'
    good.write_text('# comment\nclip00.mp4 0\nclip01 dog barking\n')
    assert prep_av.read_lists([f'train={good}']) == {
        'train': [('clip00', '0'), ('clip01', 'dog barking')]}
    bad = tmp_path / 'list.txt'
    bad.write_text('clip00 0\nclip01\n')
    with pytest.raises(ValueError, match=r'list.txt:2: expected'):
        prep_av.read_lists([f'train={bad}'])
    with pytest.raises(ValueError, match='SPLIT=FILE'):
        prep_av.read_lists([str(bad)])
    with pytest.raises(FileNotFoundError, match='missing.txt'):
        prep_av.read_lists([f'train={tmp_path}/missing.txt'])
    raw = {'train': [('a', 'dog barking'), ('b', 'cat')]}
    with pytest.raises(ValueError, match=r"not in --classes: \['cat'\]"):
        prep_av.resolve_labels(raw, ['dog barking'])
    splits, classes = prep_av.resolve_labels(
        {'train': [('a', '3'), ('b', '0')]}, None)
    assert classes is None and splits == {'train': [('a', 3), ('b', 0)]}
    with pytest.raises(ValueError, match='listed twice'):
        prep_av.resolve_labels({'train': [('a', '1'), ('a', '2')]}, None)


# ----------------------------------------------------------------- UCF101 --

@pytest.fixture(scope='module')
def ucf_raw(tmp_path_factory):
    return synth.make_ucf101(str(tmp_path_factory.mktemp('ucf_raw')))


def test_prepare_ucf101_rgb_flow_and_splits(ucf_raw, tmp_path):
    out = tmp_path / 'ucf'
    # Two spawned workers: the pool path of every tool (run_jobs).
    results = prep_ucf.main([ucf_raw['videos'], ucf_raw['splits'],
                             str(out), '--splits', '1', '--workers', '2'])
    assert {r.status for r in results.values()} == {'done'}
    assert (out / 'ucf101_train_split_1_rawframes.txt').read_text() \
        .splitlines() == ['ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01 12 0',
                          'Biking/v_Biking_g08_c01 12 1',
                          'Diving/v_Diving_g08_c01 12 2']
    assert (out / 'ucf101_val_split_1_rawframes.txt').read_text() \
        .splitlines()[1] == 'Biking/v_Biking_g01_c01 12 1'
    clip = out / 'rawframes' / 'Biking' / 'v_Biking_g01_c01'
    names = set(os.listdir(clip))
    assert names == {f'{kind}_{i:05d}.jpg' for i in range(1, 13)
                     for kind in ('img', 'flow_x', 'flow_y')}
    # The Biking square moves 2 px/frame to the right: where the flow
    # moves, u ~ +2 px and v ~ 0; the right half of the frame, which the
    # square has not reached, stays still.
    def pixels(name):
        stored = cv2.imread(str(clip / name), cv2.IMREAD_GRAYSCALE)
        return (stored.astype(float) - 127.5) * 30 / 255

    u, v = pixels('flow_x_00004.jpg'), pixels('flow_y_00004.jpg')
    moving = u > 1
    assert moving.sum() > 144  # at least the 12x12 square
    assert np.median(u[moving]) == pytest.approx(2.0, abs=0.35)
    assert np.median(v[moving]) == pytest.approx(0.0, abs=0.2)
    assert np.median(np.abs(u[:, 48:])) < 0.2
    # Resume: nothing to do.
    again = prep_ucf.main([ucf_raw['videos'], ucf_raw['splits'], str(out),
                           '--splits', '1'])
    assert {r.status for r in again.values()} == {'skipped'}


def test_quantize_flow_matches_reference_mapping():
    flow = np.array([[[-20.0, -15.0], [0.0, 15.0], [7.5, 30.0]]])
    assert prep_ucf.quantize_flow(flow).tolist() == [
        [[0, 0], [128, 255], [191, 255]]]


def test_split_files_are_checked(ucf_raw, tmp_path):
    classes = prep_ucf.read_class_index(ucf_raw['splits'])
    assert classes == {'ApplyEyeMakeup': 0, 'Biking': 1, 'Diving': 2}
    bad = tmp_path / 'trainlist01.txt'
    bad.write_text('Biking/v_Biking_g08_c01.avi 3\n')
    with pytest.raises(ValueError, match='contradicts classInd'):
        prep_ucf.read_split(str(tmp_path), 'trainlist01.txt', classes)
    with pytest.raises(FileNotFoundError, match='ucfTrainTestlist'):
        prep_ucf.read_class_index(str(tmp_path))


def test_flow_algorithms_and_clear_fallback(monkeypatch):
    frames = synth.square_frames(2, speed=3)
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    for algo in prep_ucf.FLOW_ALGOS:
        flow = prep_ucf.make_flow_fn(algo)(*gray)
        assert flow.shape == (48, 64, 2) and flow.dtype == np.float32
        assert flow[..., 0].max() > 1.5
    monkeypatch.delattr(cv2, 'optflow')
    with pytest.raises(ImportError, match='opencv-contrib-python.*'
                       'farneback'):
        prep_ucf.make_flow_fn('tvl1')


def test_make_synthetic_videos_cli(tmp_path, capsys):
    synth.main([str(tmp_path), '--kind', 'ucf101'])
    assert 'splits: ' in capsys.readouterr().out
    assert (tmp_path / 'UCF-101' / 'Diving' /
            'v_Diving_g01_c01.avi').is_file()


# ---------------------------------------------------------- flow transforms --

def write_flow_clip(root, frames=4, size=(6, 8)):
    """PNG frames (lossless) with a horizontal ramp in RGB, u and v."""
    height, width = size
    ramp = np.tile(np.arange(width, dtype=np.uint8) * 10, (height, 1))
    for i in range(1, frames + 1):
        rgb = np.stack([ramp + i, ramp, ramp], axis=-1)
        cv2.imwrite(str(root / f'img_{i:05d}.png'), rgb[..., ::-1])
        cv2.imwrite(str(root / f'flow_x_{i:05d}.png'), ramp + 100 + i)
        cv2.imwrite(str(root / f'flow_y_{i:05d}.png'), ramp + 50)
    return ramp


def flow_pipeline(flip_ratio):
    return Compose([
        dict(type='mmaction.UniformSample', clip_len=2, num_clips=1,
             test_mode=True),
        dict(type='mmaction.RawFrameDecode'),
        dict(type='mmaction.RawFlowDecode',
             filename_tmpl='flow_{}_{:05d}.png'),
        dict(type='mmaction.Resize', scale=(8, 6), keep_ratio=False,
             lazy=True),
        dict(type='mmaction.Flip', flip_ratio=flip_ratio, lazy=True),
        dict(type='mmaction.FuseFlow'),
        dict(type='mmaction.Fuse'),
        dict(type='mmaction.FormatShape', input_format='NCTHW'),
    ])


def clip_info(root):
    return dict(frame_dir=str(root), total_frames=4, start_index=1,
                filename_tmpl='img_{:05d}.png', modality='RGB')


@pytest.mark.parametrize('flip', [False, True])
def test_flow_follows_rgb_geometry(tmp_path, flip):
    ramp = write_flow_clip(tmp_path)
    out = flow_pipeline(1.0 if flip else 0.0)(clip_info(tmp_path))
    flows, imgs = out['flows'], out['imgs']
    assert flows.shape == (1, 2, 2, 6, 8) and flows.dtype == np.uint8
    assert imgs.shape == (1, 3, 2, 6, 8)
    indices = out['frame_inds'].tolist()
    expect_u = np.stack([ramp + 100 + i for i in indices])
    expect_v = np.stack([ramp + 50] * 2)
    if flip:
        # Mirrored like the RGB frames, and u negated: 255 - u.
        expect_u, expect_v = 255 - expect_u[..., ::-1], expect_v[..., ::-1]
        assert np.array_equal(imgs[0, 1], np.stack([ramp[:, ::-1]] * 2))
    assert np.array_equal(flows[0, 0], expect_u)
    assert np.array_equal(flows[0, 1], expect_v)


def test_flow_transforms_explain_errors(tmp_path):
    write_flow_clip(tmp_path)
    decode = Compose([dict(type='mmaction.UniformSample', clip_len=2),
                      dict(type='mmaction.RawFlowDecode')])
    with pytest.raises(FileNotFoundError, match='flow_x_0000.\\.jpg'):
        decode(clip_info(tmp_path))
    no_lazy = Compose([
        dict(type='mmaction.UniformSample', clip_len=2),
        dict(type='mmaction.RawFlowDecode',
             filename_tmpl='flow_{}_{:05d}.png'),
        dict(type='mmaction.FuseFlow')])
    with pytest.raises(ValueError, match='lazy=True'):
        no_lazy(clip_info(tmp_path))
    with pytest.raises(ValueError, match='direction and a frame index'):
        Compose([dict(type='mmaction.RawFlowDecode',
                      filename_tmpl='flow_{:05d}.png')])
