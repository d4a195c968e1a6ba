"""Helpers for the dataset-validation tests (importable by spawned ranks)."""
import torch.distributed as dist

from crmt_mm.datasets import AudioVisualDataset


class CountingDataset(AudioVisualDataset):
    """Counts the clips whose files this process checked."""
    checked = 0

    def _check_files(self, info, problems):
        type(self).checked += 1
        super()._check_files(info, problems)


def build(paths: dict, manifest_dir=None, **kwargs):
    """(dataset or None, files checked here, (error type, message) or None)."""
    CountingDataset.checked = 0
    try:
        dataset = CountingDataset(
            paths['ann_file'], pipeline=[],
            data_prefix=dict(img=paths['img'], audio=paths['audio']),
            num_classes=309, manifest_dir=manifest_dir, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        return None, CountingDataset.checked, (type(err).__name__, str(err))
    return dataset, CountingDataset.checked, None


def rank_scenario(rank, world, init_file, paths, manifest_dir, breaks,
                  queue):
    """One gloo rank: a cold and a warm build with ``manifest_dir``, then
    (after rank 0 removed the files ``breaks``) a build without manifest;
    reports (rank, checked cold, checked warm, error of the last build)."""
    import os
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=world)
    try:
        cold = build(paths, manifest_dir)
        warm = build(paths, manifest_dir)
        dist.barrier()
        if rank == 0:
            for path in breaks:
                os.remove(path)
        dist.barrier()
        broken = build(paths)
        queue.put((rank, cold[1], cold[2], warm[1], broken[2]))
    finally:
        dist.destroy_process_group()
