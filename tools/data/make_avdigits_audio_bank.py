"""Regenerate AV-Digits' shipped audio bank with espeak-ng.

The bank holds the words "zero" .. "nine" spoken by 60 synthetic speakers
(an espeak-ng voice variant x a random English accent, speed and pitch),
resampled to 8 kHz, trimmed, peak-normalised and stored as 8-bit mu-law in
``crmt_mm/data_prep/assets/avdigits_audio_bank.npz`` together with
per-speaker metadata and a fixed 45 train / 15 test speaker split (every
speaker has its own variant, so test voices are unseen in training).

The choice of speakers is a deterministic function of ``--seed``; the audio
itself is deterministic for one espeak-ng version only (1.51 made the
shipped file), which is why the bank is shipped rather than generated at
user time.

Usage::

    python tools/data/make_avdigits_audio_bank.py [--seed 0] [--out PATH]

Requires the ``espeak-ng`` program (Debian/Ubuntu: ``apt-get install
espeak-ng``). MBROLA voices are never used.
"""
import argparse
import hashlib
import os
import os.path as osp
import re
import subprocess
import sys
import time
import zipfile

import numpy as np

# Tools run as plain scripts: make the repository importable.
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from crmt_mm.data_prep.avdigits import (DEFAULT_BANK_PATH,  # noqa: E402
                                        MULAW_MU, SAMPLE_RATE,
                                        WINDOW_SAMPLES, WORDS, mulaw_encode)

#: eSpeak NG accents that work with the formant synthesiser (no MBROLA).
ACCENTS = ('en-gb', 'en-us', 'en-gb-scotland', 'en-gb-x-gbclan',
           'en-gb-x-gbcwmd', 'en-gb-x-rp', 'en-029', 'en-us-nyc')
SPEED_RANGE = (130, 200)  # words per minute, inclusive
PITCH_RANGE = (25, 75)  # espeak-ng pitch 0..99, inclusive
NUM_SPEAKERS = 60
NUM_TRAIN_SPEAKERS = 45
ESPEAK_RATE = 22050
# Variants are told apart on this phrase with a fixed accent/speed/pitch.
PROBE_TEXT = ' '.join(WORDS)
# Trimming: samples below this fraction of the word's peak count as silence;
# a short margin keeps the soft onset/release of the word.
SILENCE_FRACTION = 0.01
MARGIN_SECONDS = 0.01
PEAK = 0.9
# A variant known to change the voice, used to detect silent fallbacks.
CHECK_VARIANT = 'klatt'


def run_espeak(args, what):
    """Run espeak-ng and return its stdout bytes, raising on failure."""
    try:
        proc = subprocess.run(['espeak-ng'] + args, capture_output=True,
                              check=False)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            'espeak-ng is not installed or not on PATH; install it (Debian/'
            'Ubuntu: `apt-get install espeak-ng`).') from err
    if proc.returncode != 0:
        raise RuntimeError(
            f'espeak-ng failed for {what} (exit {proc.returncode}): '
            f'{proc.stderr.decode(errors="replace").strip()}')
    return proc.stdout


def espeak_version_and_data():
    """Return espeak-ng's version line and its data directory."""
    text = run_espeak(['--version'], '--version').decode().strip()
    match = re.search(r'Data at:\s*(\S.*)$', text)
    if not match:
        raise RuntimeError(
            f'Cannot find the data directory in `espeak-ng --version` '
            f'output {text!r}.')
    return text.split('  Data at:')[0].strip(), match.group(1).strip()


def accent_voices():
    """Map every accent to its (non-MBROLA) espeak-ng voice file.

    Variants are appended to the voice *file* (``gmw/en+klatt``), not to the
    language name: espeak-ng 1.51 silently ignores the variant in
    ``en-gb+klatt`` (the default English voice), while ``gmw/en+klatt``
    works. A language name can also resolve to an MBROLA voice.

    Returns:
        dict: accent -> voice file relative to ``voices/`` (e.g. 'gmw/en').
    """
    listing = run_espeak(['--voices=en'], '--voices=en').decode()
    files = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        # Columns: Pty Language Age/Gender VoiceName File [Other ...]
        if len(fields) >= 5 and not fields[4].startswith('mb/'):
            files.setdefault(fields[1], fields[4])
    missing = [a for a in ACCENTS if a not in files]
    if missing:
        raise RuntimeError(
            f'espeak-ng lacks the (non-MBROLA) accents {missing}; install a '
            'full espeak-ng (1.51 made the shipped bank).')
    voices = {a: files[a] for a in ACCENTS}
    # Guard against silent fallbacks: a variant must change every accent.
    for accent, voice in voices.items():
        plain = synthesize(PROBE_TEXT, voice, 160, 50)
        varied = synthesize(PROBE_TEXT, f'{voice}+{CHECK_VARIANT}', 160, 50)
        if np.array_equal(plain, varied):
            raise RuntimeError(
                f'espeak-ng ignores the variant {CHECK_VARIANT!r} on voice '
                f'{voice!r} (accent {accent}); this tool cannot make '
                'distinct speakers with this espeak-ng.')
    return voices


def parse_wav(data, what):
    """Decode espeak-ng's 16-bit mono WAV bytes.

    espeak-ng writes a streaming header (chunk sizes 0x7fff....) to stdout,
    so the data chunk is read up to the end of the bytes.

    Returns:
        tuple: sample rate (Hz) and ``float64`` samples in [-1, 1].
    """
    if data[:4] != b'RIFF' or data[8:12] != b'WAVE':
        raise RuntimeError(f'espeak-ng returned no WAV data for {what}.')
    pos, rate = 12, None
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(
            data[pos + 4:pos + 8], 'little')
        body = data[pos + 8:pos + 8 + size]
        if chunk == b'fmt ':
            channels = int.from_bytes(body[2:4], 'little')
            rate = int.from_bytes(body[4:8], 'little')
            bits = int.from_bytes(body[14:16], 'little')
            if channels != 1 or bits != 16:
                raise RuntimeError(
                    f'Unexpected WAV format for {what}: {channels} channels, '
                    f'{bits} bits (expected mono 16-bit).')
        elif chunk == b'data':
            if rate is None:
                break
            samples = np.frombuffer(body[:len(body) // 2 * 2], '<i2')
            return rate, samples.astype(np.float64) / 32768.0
        pos += 8 + size + (size & 1)
    raise RuntimeError(f'Malformed WAV from espeak-ng for {what}.')


def synthesize(text, voice, speed, pitch):
    """Speak ``text``; return samples at the espeak-ng rate (22,050 Hz)."""
    what = f'{text!r} with -v {voice!r} -s {speed} -p {pitch}'
    # A list argv (no shell) keeps variant names containing spaces intact.
    data = run_espeak(['-v', voice, '-s', str(speed), '-p', str(pitch),
                       '--stdout', text], what)
    rate, wave = parse_wav(data, what)
    if rate != ESPEAK_RATE:
        raise RuntimeError(
            f'espeak-ng produced {rate} Hz for {what}; this tool expects '
            f'{ESPEAK_RATE} Hz.')
    return wave


def distinct_variants(data_dir, base_voice):
    """Variant names from espeak-ng's ``voices/!v``, one per distinct voice.

    A variant that espeak-ng cannot use falls back silently to the base
    voice, and some files are aliases (e.g. klatt, klatt6 and caleb);
    comparing the synthesised probe drops both cases. Names without spaces
    and then alphabetical order win ties. The names go to espeak-ng as one
    argv element, so the one name with a space ('Mr serious') stays whole.
    """
    variant_dir = osp.join(data_dir, 'voices', '!v')
    if not osp.isdir(variant_dir):
        raise FileNotFoundError(
            f'espeak-ng variants directory {variant_dir!r} not found; '
            'install a full espeak-ng (espeak-ng-data).')
    names = sorted((n for n in os.listdir(variant_dir)
                    if osp.isfile(osp.join(variant_dir, n))
                    and not n.startswith('mb-')),
                   key=lambda n: (' ' in n, n))
    seen, kept = {}, []
    for name in names:
        wave = synthesize(PROBE_TEXT, f'{base_voice}+{name}', 160, 50)
        digest = hashlib.sha256(wave.tobytes()).hexdigest()
        if digest in seen:
            print(f'  variant {name!r} sounds like {seen[digest]!r}: dropped')
            continue
        seen[digest] = name
        kept.append(name)
    return names, kept


def to_bank_word(wave, what):
    """Resample 22,050 -> 8,000 Hz, trim silence, peak-normalise."""
    from scipy.signal import resample_poly

    # 8000 / 22050 = 160 / 441
    wave = resample_poly(wave, 160, 441)
    loud = np.flatnonzero(np.abs(wave) > SILENCE_FRACTION * np.abs(wave).max())
    if loud.size == 0:
        raise RuntimeError(f'espeak-ng produced silence for {what}.')
    margin = int(MARGIN_SECONDS * SAMPLE_RATE)
    wave = wave[max(loud[0] - margin, 0):loud[-1] + margin + 1]
    if len(wave) > WINDOW_SAMPLES:
        raise RuntimeError(
            f'{what} lasts {len(wave) / SAMPLE_RATE:.2f} s, longer than the '
            f'{WINDOW_SAMPLES / SAMPLE_RATE:.2f} s AV-Digits window; raise '
            'the lower end of SPEED_RANGE.')
    return wave * (PEAK / np.abs(wave).max())


def write_npz(path, **arrays):
    """Like ``np.savez_compressed`` but byte-reproducible.

    ``np.savez_compressed`` stamps the current time into every zip entry, so
    two identical banks would differ as files (and as git blobs). Entries
    here carry a fixed timestamp and the strongest deflate level.
    """
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED,
                         compresslevel=9) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(name + '.npy', date_time=(1980, 1, 1, 0, 0,
                                                             0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, 'w') as f:
                np.lib.format.write_array(
                    f, np.asanyarray(value), allow_pickle=False)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Regenerate the AV-Digits espeak-ng audio bank.')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the speaker choice and split')
    parser.add_argument('--out', default=DEFAULT_BANK_PATH,
                        help='output .npz (default: the shipped asset)')
    return parser.parse_args()


def main():
    args = parse_args()
    start = time.time()
    version, data_dir = espeak_version_and_data()
    print(f'{version}; data at {data_dir}')
    voices = accent_voices()
    names, variants = distinct_variants(data_dir, voices['en-gb'])
    print(f'{len(names)} variant files, {len(variants)} distinct voices')
    if len(variants) < NUM_SPEAKERS:
        raise RuntimeError(
            f'Only {len(variants)} distinct espeak-ng variants, need '
            f'{NUM_SPEAKERS}; install a full espeak-ng (1.51 has 98).')

    rng = np.random.default_rng(args.seed)
    chosen = [variants[i] for i in rng.permutation(len(variants))[:
                                                                  NUM_SPEAKERS]]
    accents = rng.choice(ACCENTS, size=NUM_SPEAKERS)
    speeds = rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1, NUM_SPEAKERS)
    pitches = rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1, NUM_SPEAKERS)
    split = np.full(NUM_SPEAKERS, 'test', dtype='<U5')
    split[rng.permutation(NUM_SPEAKERS)[:NUM_TRAIN_SPEAKERS]] = 'train'

    codes, offsets, lengths, pos = [], [], [], 0
    for spk in range(NUM_SPEAKERS):
        voice = f'{voices[accents[spk]]}+{chosen[spk]}'
        offs, lens = [], []
        for word in WORDS:
            what = f'{word!r} by speaker {spk} ({voice})'
            wave = to_bank_word(
                synthesize(word, voice, int(speeds[spk]), int(pitches[spk])),
                what)
            codes.append(mulaw_encode(wave))
            offs.append(pos)
            lens.append(len(wave))
            pos += len(wave)
        offsets.append(offs)
        lengths.append(lens)

    lengths = np.asarray(lengths, dtype=np.int64)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    write_npz(
        args.out,
        audio=np.concatenate(codes),
        offsets=np.asarray(offsets, dtype=np.int64),
        lengths=lengths,
        sample_rate=np.int64(SAMPLE_RATE),
        mu=np.int64(MULAW_MU),
        words=np.asarray(WORDS),
        speaker_variant=np.asarray(chosen),
        speaker_accent=np.asarray(accents),
        speaker_voice=np.asarray(
            [f'{voices[a]}+{v}' for a, v in zip(accents, chosen)]),
        speaker_speed=speeds.astype(np.int64),
        speaker_pitch=pitches.astype(np.int64),
        speaker_split=split,
        seed=np.int64(args.seed),
        generator=np.asarray(f'{version}; {osp.basename(__file__)}'),
        accents=np.asarray(ACCENTS))
    dur = lengths / SAMPLE_RATE
    print(f'{NUM_SPEAKERS} speakers ({(split == "train").sum()} train / '
          f'{(split == "test").sum()} test), word length '
          f'{dur.min():.2f}..{dur.max():.2f} s (mean {dur.mean():.2f} s)')
    print(f'wrote {args.out} ({osp.getsize(args.out) / 1e6:.2f} MB) in '
          f'{time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
