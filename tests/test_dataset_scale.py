"""AudioVisualDataset start-up validation at scale: the file check is
sharded across gloo ranks (same errors on every rank, same as one process)
and a manifest of a passed check lets a restart skip it."""
import multiprocessing as mp
import os
import os.path as osp

import pytest

import crmt_mm  # noqa: F401
from helpers_dataset_scale import build, rank_scenario
from helpers_identity import load_tool

CLIPS = 24


@pytest.fixture
def placeholder(tmp_path):
    return load_tool('benchmark').make_placeholder_dataset(
        str(tmp_path / 'data'), CLIPS, frames=3)


def manifests(directory):
    return sorted(os.listdir(directory)) if osp.isdir(directory) else []


def test_manifest_skips_the_file_check_until_the_key_changes(placeholder,
                                                             tmp_path):
    cache = str(tmp_path / 'manifests')
    dataset, checked, error = build(placeholder, cache)
    assert error is None and checked == CLIPS and len(dataset) == CLIPS
    assert len(manifests(cache)) == 1
    dataset, checked, _ = build(placeholder, cache)
    assert checked == 0 and len(dataset) == CLIPS  # restart: no re-check
    # another option the check depends on: checked again
    assert build(placeholder, cache, audio_shape=(64, 64, 1))[2] is not None
    # a new entry under a root changes its modification time
    os.remove(osp.join(placeholder['audio'], 'clip_000003.npy'))
    _, checked, error = build(placeholder, cache)
    assert checked == CLIPS and error[0] == 'FileNotFoundError'
    assert "line 4: audio file" in error[1] and 'clip_000003.npy' in error[1]
    assert len(manifests(cache)) == 1  # a failed check records nothing
    # a rewritten annotation list (same size and mtime would still differ
    # in its SHA-1): drop the broken clip
    with open(placeholder['ann_file']) as f:
        lines = [line for line in f if not line.startswith('clip_000003')]
    with open(placeholder['ann_file'], 'w') as f:
        f.writelines(lines)
    dataset, checked, error = build(placeholder, cache)
    assert error is None and checked == CLIPS - 1
    assert len(manifests(cache)) == 2
    assert build(placeholder, cache)[1] == 0


def test_two_ranks_share_the_check_and_report_the_same_errors(placeholder,
                                                              tmp_path):
    """Clean data: each rank checks half the clips, a manifest is written
    and the second build checks nothing. Broken data (problems in both
    ranks' shards): every rank raises exactly the single-process error."""
    cache = str(tmp_path / 'manifests')
    breaks = [osp.join(placeholder['img'], f'clip_{clip:06d}',
                       'img_00002.png') for clip in (2, 5, 9)]
    breaks.append(osp.join(placeholder['audio'], 'clip_000004.npy'))
    ctx = mp.get_context('fork')  # CPU only; spawn re-imports everything
    queue = ctx.Queue()
    procs = [ctx.Process(target=rank_scenario, args=(
        r, 2, str(tmp_path / 'dist_init'), placeholder, cache, breaks,
        queue)) for r in range(2)]
    for proc in procs:
        proc.start()
    results = sorted(queue.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert [r[1:4] for r in results] == [(CLIPS // 2, None, 0)] * 2
    assert len(manifests(cache)) == 1
    single = build(placeholder)[2]
    assert single[0] == 'FileNotFoundError'
    positions = [single[1].index(f'line {n}:') for n in (3, 5, 6, 10)]
    assert positions == sorted(positions)  # file order across shards
    assert [r[4] for r in results] == [single, single]
