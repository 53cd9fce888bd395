"""Iteration-based multi-task trainer (All-in-One; the supernet trainer builds on it).

The loop only steps; logging, VisualDL, checkpoints and evaluation are hooks (hooks.py).
A step does not wait for the device: images and labels arrive there already (the loader
enqueues their copies from pinned memory without blocking: data/to_device.py), task sizes come
from the batch sampler, losses stay tensors and are read (and checked to be finite) at
log_every's steps only, once: the PeriodicWriter hands that one copy to the log and VisualDL.

Under data parallel, gradients are all-reduced by DataParallel after each backward, or, with
``sync_once`` (several backward passes per step, or recompute, which Paddle documents needs
it), accumulated locally under no_sync and all-reduced once per step in fused buckets.
"""
import contextlib
import os
import signal
import weakref

import numpy as np
import paddle
import paddle.distributed as pdist

from ..arch import build_model
from ..arch.trained import load_pretrained
from ..data.loader import build_train_loader
from ..data.samplers.multitask import HeterogeneousBatchSampler
from ..loss import build_loss
from ..optimizer import build_optimizer
from ..utils.checkpoint import (check_output_dir, detach, load_checkpoint, point, prune_checkpoints, read_states,
                                resolve_prefix, saved_best, save_checkpoint)
from ..utils.config import dump_config
from ..utils.device import setup_device
from ..utils.dist import barrier, rank, world_size
from ..utils.fs import check_writable_dir
from ..utils.logger import init_logger
from ..utils.pointer import pointed_at
from .amp import MixedPrecision
from .eval_report import report_results
from .evaluator import Evaluator
from .hooks import CheckpointHook, EvalHook, Every, PeriodicWriter, TrainLogWriter, VisualDLWriter, host_stats
from .interrupt import StopRequest, TrainingInterrupted
from .resume import on_every_rank
from .train_flops import pass_flops


class Trainer:
    def __init__(self, config):
        self.cfg = config
        g = config["Global"]
        self.world_size, self.rank = world_size(), rank()
        self.output_dir = check_writable_dir(g["output_dir"], "Global.output_dir")
        if not g["checkpoints"]:
            check_output_dir(self.output_dir, g["overwrite_output_dir"])
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
        if g["checkpoints"]:  # every rank reads it: each checks it can (resume.py)
            ckpt, states = on_every_rank(lambda: (resolve_prefix(g["checkpoints"])[0], read_states(g["checkpoints"])),
                                         g["checkpoints"])
            self.start_iter = int(states["iteration"])
            self.best = states.get("best", self.best)
        # training FLOPs of every pass so far (train_flops.py), all ranks; None: not counted
        self.train_flops = 0 if states is None else states.get("train_flops")
        on_disk = saved_best(self.output_dir)  # best_model is only ever replaced by a better score
        if on_disk is not None and (self.best["score"] is None or on_disk["score"] > self.best["score"]):
            self.best = {"score": on_disk["score"], "iteration": on_disk.get("iteration")}
        self.loader, self.task_sets = build_train_loader(config, self.rank, self.world_size,
                                                         self.start_iter)
        self.tasks = list(self.task_sets)
        self.model = build_model(config, {t: d.num_classes for t, d in self.task_sets.items()})
        self.losses = {t: build_loss(config["Tasks"][t]["loss"], where=f"Tasks.{t}.loss")
                       for t in self.tasks}
        self.task_weights = {t: float(config["Loss"]["task_weights"].get(t, 1.0)) for t in self.tasks}
        self.optimizer, self.lr = self.build_optimizer()
        self.amp = MixedPrecision(g["amp"], g["device"], self.log)
        if not g["checkpoints"]:  # a resume sets its own weights below
            self.log.info(load_pretrained(self.model, config))
        if g["checkpoints"]:
            on_every_rank(lambda: load_checkpoint(ckpt, self.model, self.optimizer, self.lr, states=states,
                                                  scaler=self.amp.scaler), g["checkpoints"])
            named = "" if ckpt == g["checkpoints"] else f" ({ckpt})"
            self.log.info(f"resumed from {g['checkpoints']} at iteration {self.start_iter}{named}")
        self.saved_weights = None  # the iteration whose iter_<n> holds the model's weights as they are now
        self.amp.prepare(self.model, self.optimizer)
        self.sync_once = bool(config["Arch"]["Backbone"].get("recompute", False))
        self.net = self.model
        if self.world_size > 1:
            self.net = paddle.DataParallel(self.model, find_unused_parameters=self.may_skip_parameters())
        self.vdl = None
        if g["use_visualdl"] and self.rank == 0:
            from visualdl import LogWriter
            self.vdl = LogWriter(logdir=os.path.join(self.output_dir, "vdl"))
        self.evaluator = None
        self.log_every = Every(g["log_interval"], g["max_iters"])
        self.hooks = []
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        g, n = self.cfg["Global"], self.cfg["Global"]["max_iters"]
        writers = [TrainLogWriter(n)] + ([VisualDLWriter()] if self.vdl else [])
        return [PeriodicWriter(self.log_every, writers),
                CheckpointHook(g["save_interval"], n),
                EvalHook(g["eval_interval"], n)]

    def register_hooks(self, hooks):
        for h in hooks:
            h.trainer = weakref.proxy(self)  # no trainer <-> hook reference cycle
        self.hooks.extend(hooks)

    def build_optimizer(self, extra_groups=()):
        """(optimizer, LR schedule): shared parameters at the base LR, each task's own at its
        lr_mult, then ``extra_groups`` ([{"params", "lr_mult"}], e.g. the supernet's shared path)."""
        groups = [{"params": list(self.model.shared_parameters()), "lr_mult": 1.0}]
        groups += [{"params": list(self.model.task_parameters(t)),
                    "lr_mult": self.cfg["Tasks"][t]["lr_mult"]} for t in self.tasks]
        groups += list(extra_groups)
        return build_optimizer(self.cfg["Optimizer"], groups, self.cfg["Global"]["max_iters"], model=self.model)

    def may_skip_parameters(self):
        """Whether a step can leave parameters without a gradient (DataParallel must then look for
        them each backward): a task missing from a batch (homogeneous sampler) skips its head."""
        return not isinstance(self.loader.batch_sampler, HeterogeneousBatchSampler)

    def batch_sizes(self, batch, iteration):
        """[(task, images)] of ``batch``, the loader's batch of ``iteration``, as the batch sampler
        planned it: host-side, where counting the task ids would wait for the device."""
        bs = self.loader.batch_sampler
        present = bs.tasks_at(iteration - 1)  # the sampler counts from 0
        sizes = [(t, bs.task_counts[t] if t in present else 0) for t in self.tasks]
        if sum(n for _, n in sizes) != batch[0].shape[0]:
            raise RuntimeError(f"iteration {iteration}: the batch holds {batch[0].shape[0]} images, "
                               f"the batch sampler planned {sizes}")
        return sizes

    def forward_losses(self, images, labels, sizes):
        """(total weighted loss, {task: loss terms}, {task: model outputs}) of one forward.
        Only the model runs under autocast (its heads in fp32: amp.py); the losses run in fp32."""
        with self.amp.autocast():
            outs = self.net(images, sizes, labels)
        self.count_flops(sizes)
        parts, total = {}, 0.0
        for t, out in outs.items():
            parts[t] = self.losses[t](out, labels_of(labels, sizes, t))
            total = total + self.task_weights[t] * parts[t]["loss"]
        return total, parts, outs

    def count_flops(self, sizes):
        """Add one training pass over ``sizes`` (each forward here is followed by its backward)."""
        if self.train_flops is not None:
            f = pass_flops(self.model, sizes)
            self.train_flops = None if f is None else self.train_flops + f * self.world_size

    def backward(self, loss):
        self.amp.backward(loss)

    @contextlib.contextmanager
    def local_grads(self):
        """The backward passes of one step: with sync_once under data parallel they accumulate
        on this rank (no_sync) and are averaged over the ranks once at the end, in fused
        buckets; otherwise DataParallel averages after each backward. Both give the mean of
        the ranks' summed gradients."""
        if not (self.sync_once and self.world_size > 1):
            yield
            return
        from paddle.distributed.fleet.utils.hybrid_parallel_util import fused_allreduce_gradients
        with self.net.no_sync():
            yield
        fused_allreduce_gradients(list(self.model.parameters()), None)

    def apply_step(self):
        self.amp.step(self.optimizer)
        self.optimizer.clear_grad()
        self.lr.step()

    def seed_step(self, iteration):
        paddle.seed(self.cfg["Global"]["seed"] + 7919 * iteration + self.rank)  # drop path per step

    # one optimisation step on a collated batch (images, labels, camids, task_ids)
    def train_step(self, batch, iteration):
        images, labels = batch[:2]
        self.seed_step(iteration)
        with self.local_grads():
            total, parts, _ = self.forward_losses(images, labels, self.batch_sizes(batch, iteration))
            self.backward(total)
        self.apply_step()
        return step_stats(total, parts)

    def save(self, iteration):
        """Rank 0 writes iter_<iteration>, points latest at it and keeps the newest
        Global.keep_checkpoints iter_<n> (0: all; and those latest and best_model name). Every
        rank then waits at a barrier, so none is inside a collective while rank 0 writes."""
        if self.rank == 0:
            if pointed_at(self.output_dir).get("best_model") == f"iter_{iteration}":  # about to be replaced
                self.log.info(f"best_model named {detach(self.output_dir, 'best_model')}, which this save "
                              f"replaces: copied it to {self.output_dir}/best_model first")
            self.write_checkpoint(f"iter_{iteration}", iteration)
            point(self.output_dir, "latest", iteration)
            keep = self.cfg["Global"]["keep_checkpoints"]
            for prefix in prune_checkpoints(self.output_dir, keep) if keep else ():
                self.log.info(f"removed checkpoint {prefix} (Global.keep_checkpoints={keep})")
        self.saved_weights = iteration
        self.barrier()

    def save_best(self, iteration):
        """Rank 0 (the caller waits at the barrier with the others): best_model, with self.best. A
        pointer to iter_<iteration> when that holds the weights evaluated (saved this iteration, not
        changed since), else a full copy."""
        if self.saved_weights == iteration:
            point(self.output_dir, "best_model", iteration, best=self.best)
        else:
            self.write_checkpoint("best_model", iteration)

    def write_checkpoint(self, name, iteration):
        """The model, optimizer, LR and loss-scaler states as <output_dir>/<name>.*, with this run's states."""
        save_checkpoint(os.path.join(self.output_dir, name), self.model, self.optimizer, self.lr,
                        {"iteration": iteration, "best": self.best, "train_flops": self.train_flops},
                        scaler=self.amp.scaler)

    def barrier(self):
        barrier()

    def evaluate(self, iteration):
        if self.evaluator is None:
            self.evaluator = Evaluator(self.cfg, self.model)
        if not self.evaluator.has_sets:
            return None
        with self.amp.eval_autocast():
            result = self.evaluator.evaluate(tag=f"iter_{iteration}")
        for h in self.hooks:
            h.after_eval(iteration, result)
        report_results(result, self.output_dir, self.log)  # last, so a run's final line is the paper-order row
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
        """Train from start_iter to Global.max_iters; returns the last iteration. SIGINT or
        SIGTERM stops it after the current step: iter_<n> and ``latest`` are saved (rank 0), then
        TrainingInterrupted is raised (interrupt.py)."""
        self.model.train()
        for h in self.hooks:
            h.before_train()
        it = self.start_iter
        batches = iter(self.loader)
        with StopRequest() as stop:  # held through the save: a repeated signal must not cut it short
            try:
                while not self.stop_agreed(stop, it):
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except Exception:
                        if stop.signum is None:
                            raise
                        break  # the signal stopped the loader's workers too: stop at the last whole step
                    it += 1
                    stats = self.train_step(batch, it)
                    if self.log_every.due(it):  # the loop's only wait for the device
                        stats = host_stats(stats)
                        if not np.isfinite(stats["loss"]):
                            raise FloatingPointError(f"iteration {it}: loss is {stats['loss']} ({stats})")
                    for h in self.hooks:
                        h.after_step(it, stats, int(batch[0].shape[0]))
            except BaseException:
                self.stop_loader(batches)
                raise
            if stop.signum is not None and it < self.cfg["Global"]["max_iters"]:  # else: the run is done
                self.stop_loader(batches)
                self.save(it)
                checkpoint = os.path.join(self.output_dir, "latest") if self.rank == 0 else None
                self.log.warning(f"stopped by {signal.Signals(stop.signum).name} after iteration {it}"
                                 + (f"; saved {checkpoint}" if checkpoint else ""))
                raise TrainingInterrupted(stop.signum, it, checkpoint)
        if self.train_flops is not None:
            self.log.info(f"training FLOPs (backbone forward + backward, every pass): {self.train_flops:.4g}")
        for h in reversed(self.hooks):
            h.after_train(it)
        return it

    def stop_agreed(self, stop, iteration):
        """Whether to stop before the step after ``iteration`` on a signal this process (under a
        launch: any rank) received. Ranks agree after every step on the CPU, else at log steps
        (no extra wait for the device); never after the last step, which ends the run anyway."""
        if iteration >= self.cfg["Global"]["max_iters"]:
            return False
        cpu = self.cfg["Global"]["device"] == "cpu"
        return stop.agreed(self.world_size, due=cpu or self.log_every.due(iteration))

    def stop_loader(self, batches):
        """Stop the loader's thread and workers now, while they can still be joined: left to
        interpreter exit they can hang it (Paddle's iterator __del__ on a dead worker's pipe)."""
        if hasattr(batches, "close"):
            batches.close()
        self.close()


def step_stats(total, parts, prefix=""):
    """{"loss": total, "<task>/<term>": value} as detached tensors (hooks.host_stats reads them)."""
    stats = {prefix + "loss": _detached(total)}
    for t, terms in parts.items():
        for k, v in terms.items():
            stats[f"{prefix}{t}/{k}"] = _detached(v)
    return stats


def _detached(v):
    return v.detach() if isinstance(v, paddle.Tensor) else v


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
