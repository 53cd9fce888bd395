"""All tasks' training sets behind one index space, for one DataLoader over mixed batches."""
import numpy as np

from .base import sample_seed


class MultiTaskDataset:
    """Global index = offsets[task] + local index; item -> (image, label, camid, task_id)."""

    def __init__(self, task_datasets):
        self.tasks = list(task_datasets)
        self.datasets = [task_datasets[t] for t in self.tasks]
        sizes = [len(d) for d in self.datasets]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.offsets = {t: int(s) for t, s in zip(self.tasks, self.starts[:-1])}

    def __len__(self):
        return int(self.starts[-1])

    def __getitem__(self, index):
        i, seed = sample_seed(index)
        t = int(np.searchsorted(self.starts, i, side="right") - 1)
        img, label, cam = self.datasets[t][(i - self.starts[t], seed) if seed is not None else i - self.starts[t]]
        return img, np.int64(label), np.int64(cam), np.int64(t)
