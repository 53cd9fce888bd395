"""Iteration-based multi-task trainer (All-in-One; the supernet trainer builds on it).

The loop only steps; logging, VisualDL, checkpoints and evaluation are hooks (hooks.py).
"""
import os
import weakref

import numpy as np
import paddle
import paddle.distributed as pdist

from ..arch import build_model
from ..arch.multitask import load_pretrained
from ..data.loader import build_train_loader
from ..loss import build_loss
from ..optimizer import build_optimizer
from ..utils.checkpoint import load_checkpoint, read_states, save_checkpoint
from ..utils.config import dump_config
from ..utils.device import setup_device
from ..utils.dist import rank, world_size
from ..utils.logger import init_logger
from .hooks import CheckpointHook, EvalHook, LoggerHook, VisualDLHook


class Trainer:
    def __init__(self, config):
        self.cfg = config
        g = config["Global"]
        self.world_size, self.rank = world_size(), rank()
        self.output_dir = g["output_dir"]
        os.makedirs(self.output_dir, exist_ok=True)
        self.log = init_logger(os.path.join(self.output_dir, "train.log"))
        setup_device(config)
        if self.world_size > 1:
            pdist.init_parallel_env()
        if self.rank == 0:
            dump_config(config, os.path.join(self.output_dir, "config.yaml"))
        self.log.info("config:\n" + _describe(config))
        paddle.seed(g["seed"])  # same initial weights on every rank and every run
        np.random.seed(g["seed"])

        self.start_iter, self.best, states = 0, {"score": None, "iteration": None}, None
        if g["checkpoints"]:
            states = read_states(g["checkpoints"])
            self.start_iter = int(states["iteration"])
            self.best = states.get("best", self.best)
        self.loader, self.task_sets = build_train_loader(config, self.rank, self.world_size,
                                                         self.start_iter)
        self.tasks = list(self.task_sets)
        self.model = build_model(config, {t: d.num_classes for t, d in self.task_sets.items()})
        self.losses = {t: build_loss(config["Tasks"][t]["loss"], where=f"Tasks.{t}.loss")
                       for t in self.tasks}
        self.task_weights = {t: float(config["Loss"]["task_weights"].get(t, 1.0)) for t in self.tasks}
        groups = [{"params": list(self.model.shared_parameters()), "lr_mult": 1.0}]
        groups += [{"params": list(self.model.task_parameters(t)),
                    "lr_mult": config["Tasks"][t]["lr_mult"]} for t in self.tasks]
        self.optimizer, self.lr = build_optimizer(config["Optimizer"], groups, g["max_iters"], model=self.model)
        if g["pretrained_model"] and not g["checkpoints"]:
            self.log.info(load_pretrained(self.model, config))
        if g["checkpoints"]:
            load_checkpoint(g["checkpoints"], self.model, self.optimizer, self.lr, states=states)
            self.log.info(f"resumed from {g['checkpoints']} at iteration {self.start_iter}")
        self.net = self.model
        if self.world_size > 1:
            self.net = paddle.DataParallel(self.model, find_unused_parameters=True)
        self.amp = g["amp"] and g["device"].startswith("gpu")
        if g["amp"] and not self.amp:
            self.log.warning("Global.amp is ignored on %s (mixed precision needs a GPU)", g["device"])
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15) if self.amp else None
        self.vdl = None
        if g["use_visualdl"] and self.rank == 0:
            from visualdl import LogWriter
            self.vdl = LogWriter(logdir=os.path.join(self.output_dir, "vdl"))
        self.evaluator = None
        self.hooks = []
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        g, n = self.cfg["Global"], self.cfg["Global"]["max_iters"]
        return ([LoggerHook(g["log_interval"], n)]
                + ([VisualDLHook(g["log_interval"], n)] if self.vdl else [])
                + [CheckpointHook(g["save_interval"], n), EvalHook(g["eval_interval"], n)])

    def register_hooks(self, hooks):
        for h in hooks:
            h.trainer = weakref.proxy(self)  # no trainer <-> hook reference cycle
        self.hooks.extend(hooks)

    def task_sizes(self, task_ids):
        counts = np.bincount(task_ids.numpy(), minlength=len(self.tasks))
        return [(t, int(n)) for t, n in zip(self.tasks, counts)]

    def forward_losses(self, images, labels, sizes):
        """(total weighted loss, {task: loss terms}, {task: model outputs}) of one forward."""
        with paddle.amp.auto_cast(enable=self.amp):
            outs = self.net(images, sizes, labels)
            parts, total = {}, 0.0
            for t, out in outs.items():
                parts[t] = self.losses[t](out, labels_of(labels, sizes, t))
                total = total + self.task_weights[t] * parts[t]["loss"]
        return total, parts, outs

    def backward(self, loss):
        (self.scaler.scale(loss) if self.amp else loss).backward()

    def apply_step(self):
        if self.amp:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad()
        self.lr.step()

    def seed_step(self, iteration):
        paddle.seed(self.cfg["Global"]["seed"] + 7919 * iteration + self.rank)  # drop path per step

    # one optimisation step on a collated batch (images, labels, camids, task_ids)
    def train_step(self, batch, iteration):
        images, labels, _, task_ids = batch
        self.seed_step(iteration)
        total, parts, _ = self.forward_losses(images, labels, self.task_sizes(task_ids))
        self.backward(total)
        self.apply_step()
        return step_stats(total, parts)

    def save(self, name, iteration):
        if self.rank != 0:
            return
        save_checkpoint(os.path.join(self.output_dir, name), self.model, self.optimizer, self.lr,
                        {"iteration": iteration, "best": self.best})

    def evaluate(self, iteration):
        if self.evaluator is None:
            from .evaluator import Evaluator
            self.evaluator = Evaluator(self.cfg, self.model)
        if not self.evaluator.has_sets:
            return None
        result = self.evaluator.evaluate(tag=f"iter_{iteration}")
        for h in self.hooks:
            h.after_eval(iteration, result)
        return result

    def close(self):
        """Flush and stop the VisualDL writer (its thread must not outlive a failed run)."""
        if self.vdl is not None:
            try:
                self.vdl.close()
            except Exception:  # noqa: BLE001 - best effort while another error propagates
                pass
            self.vdl = None

    def train(self):
        """Train from start_iter to Global.max_iters; returns the last iteration."""
        self.model.train()
        for h in self.hooks:
            h.before_train()
        it = self.start_iter
        batches = iter(self.loader)
        try:
            for it, batch in enumerate(batches, start=self.start_iter + 1):
                stats = self.train_step(batch, it)
                if not np.isfinite(stats["loss"]):
                    raise FloatingPointError(f"iteration {it}: loss is {stats['loss']} ({stats})")
                for h in self.hooks:
                    h.after_step(it, stats, int(batch[0].shape[0]))
        except BaseException:
            # stop the loader's thread and workers now, while they can still be joined: left to
            # interpreter exit they can hang it (Paddle's iterator __del__ on a dead worker's pipe)
            if hasattr(batches, "close"):
                batches.close()
            self.close()
            raise
        for h in reversed(self.hooks):
            h.after_train(it)
        return it


def step_stats(total, parts, prefix=""):
    """{"loss": total, "<task>/<term>": value} as floats."""
    stats = {prefix + "loss": float(total)}
    for t, terms in parts.items():
        for k, v in terms.items():
            stats[f"{prefix}{t}/{k}"] = float(v)
    return stats


def labels_of(labels, sizes, task):
    start = 0
    for t, n in sizes:
        if t == task:
            return labels[start:start + n]
        start += n
    raise KeyError(task)


def _describe(config):
    import yaml
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None).rstrip()
