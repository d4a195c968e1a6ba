"""Tiny FSDD recordings and MNIST idx files, written by the tests."""
import gzip
import os
import os.path as osp
import sys
import wave

import numpy as np

from helpers import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools', 'data'))
import prepare_fsdd_mnist as prep  # noqa: E402

def write_wav(path, samples, rate=8000, channels=1, width=2):
    with wave.open(str(path), 'wb') as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())


def tone(digit, take, rate=8000, seconds=0.3):
    t = np.arange(int(rate * seconds)) / rate
    wave_ = 0.3 * np.sin(2 * np.pi * (300 + 150 * digit + 7 * take) * t)
    return (wave_ * 32767).astype('<i2')


def write_idx(path, array, magic):
    header = magic.to_bytes(4, 'big') + b''.join(
        int(d).to_bytes(4, 'big') for d in array.shape)
    with gzip.open(str(path), 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fsdd(folder, speakers=('alice', 'bob'), takes=7):
    os.makedirs(folder, exist_ok=True)
    for speaker in speakers:
        for digit in range(10):
            for take in range(takes):
                write_wav(osp.join(folder, f'{digit}_{speaker}_{take}.wav'),
                          tone(digit, take))
    return str(folder)


def make_mnist(folder, per_digit=12, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    labels = np.repeat(np.arange(10), per_digit)
    rng.shuffle(labels)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for i, digit in enumerate(labels):  # a bar whose place codes the digit
        images[i, 4 + 2 * digit:6 + 2 * digit, 4:24] = 200
        images[i] += rng.integers(0, 40, (28, 28), dtype=np.uint8)
    write_idx(osp.join(folder, 't10k-images-idx3-ubyte.gz'), images,
              prep.IMAGES_MAGIC)
    write_idx(osp.join(folder, 't10k-labels-idx1-ubyte.gz'), labels,
              prep.LABELS_MAGIC)
    return str(folder)
