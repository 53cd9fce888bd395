"""Build the mixed-batch training loader and plain evaluation loaders from the config."""
import paddle

from ..utils.device import set_cpu_threads
from ..utils.errors import ConfigError
from ..utils.logger import get_logger
from .datasets import build_source
from .datasets.base import ImageDataset
from .datasets.multitask import MultiTaskDataset
from .samplers import SAMPLERS
from .transforms import build_transforms, default_eval_transforms, default_train_transforms


def image_hw(config):
    return list(config["Global"]["image_shape"][1:])


def train_transforms(config):
    items = config["DataLoader"]["Train"]["transforms"]
    if items:
        return build_transforms(items, where="DataLoader.Train.transforms")
    return default_train_transforms(image_hw(config))


def eval_transforms(config):
    items = config["DataLoader"]["Eval"]["transforms"]
    if items:
        return build_transforms(items, where="DataLoader.Eval.transforms")
    return default_eval_transforms(image_hw(config))


def one_thread_worker(worker_id):
    """A loader worker decodes and augments one image at a time: one Paddle thread each, so
    N workers add N busy cores next to Global.cpu_threads, not N times as many."""
    set_cpu_threads(1)


def build_task_train_set(config, task, transform=None):
    """ImageDataset of ``task``'s merged training sources, labels disjoint per source."""
    tcfg = config["Tasks"][task]
    if not tcfg["datasets"]:
        raise ConfigError(f"Tasks.{task}.datasets: empty; give at least one {{name, root}}")
    parts = []
    for i, dcfg in enumerate(tcfg["datasets"]):
        source = build_source(dcfg, config["Global"]["data_root"], where=f"Tasks.{task}.datasets.{i}")
        parts.append((source, source.train()))
    ds = ImageDataset(parts, transform=transform, relabel=True)
    desc = ", ".join(f"{s.name} {len(r)} imgs" for s, r in parts)
    get_logger().info(f"task {task}: {len(ds)} images, {ds.num_classes} ids ({desc})")
    return ds


def build_task_train_sets(config, transform=None):
    """{task: ImageDataset} for every task of the config."""
    return {task: build_task_train_set(config, task, transform) for task in config["Tasks"]}


def build_batch_sampler(config, task_sets, rank=0, world_size=1, start_iter=0):
    g = config["Global"]
    task_samplers = {}
    for task, ds in task_sets.items():
        tcfg = config["Tasks"][task]
        where = f"Tasks.{task}.sampler"
        try:
            task_samplers[task] = SAMPLERS.build(
                tcfg["sampler"], where=where, labels=ds.labels, batch_size=tcfg["batch_size"],
                seed=g["seed"], rank=rank, world_size=world_size)
        except ConfigError as e:
            raise ConfigError(f"Tasks.{task}: {e}") from None
    offsets = MultiTaskDataset(task_sets).offsets
    return SAMPLERS.build(config["DataLoader"]["Train"]["batch_sampler"],
                          where="DataLoader.Train.batch_sampler", task_samplers=task_samplers,
                          offsets=offsets, max_iters=g["max_iters"], start_iter=start_iter,
                          seed=g["seed"], rank=rank)


def build_train_loader(config, rank=0, world_size=1, start_iter=0):
    """Returns (loader, {task: ImageDataset}). Each batch: (images, labels, camids, task_ids),
    tasks contiguous in config order."""
    task_sets = build_task_train_sets(config, train_transforms(config))
    check_sample_shape(config, task_sets)
    batch_sampler = build_batch_sampler(config, task_sets, rank, world_size, start_iter)
    loader = paddle.io.DataLoader(MultiTaskDataset(task_sets), batch_sampler=batch_sampler,
                                  num_workers=config["DataLoader"]["Train"]["num_workers"],
                                  use_shared_memory=False, worker_init_fn=one_thread_worker)
    return loader, task_sets


def check_sample_shape(config, task_sets):
    """The backbone runs once on all tasks' images, so every transformed image must have
    Global.image_shape; catch a mismatched Resize before training starts."""
    want = list(config["Global"]["image_shape"])
    for task, ds in task_sets.items():
        got = list(ds[(0, 0)][0].shape)
        if got != want:
            raise ConfigError(f"DataLoader.Train.transforms give {task} images of shape {got}, but "
                              f"Global.image_shape is {want}; make the Resize/RandomCrop sizes match")


def build_eval_loader(dataset, config):
    return paddle.io.DataLoader(dataset, batch_size=config["DataLoader"]["Eval"]["batch_size"],
                                shuffle=False, drop_last=False,
                                num_workers=config["DataLoader"]["Eval"]["num_workers"],
                                use_shared_memory=False, worker_init_fn=one_thread_worker)
