"""Side effects of the training loop as hooks (fast-reid style): the loop only steps.

Events: before_train(); after_step(iteration, stats, batch_images) with this rank's image
count; after_eval(iteration, result) from Trainer.evaluate, which also runs outside the loop
(tools/train.py's final evaluation); after_train(iteration). after_train runs in reverse order,
so hooks unwind like nested with-blocks: the periodic writer, registered first, reports last
(after the final checkpoint). ``hook.trainer`` is set by Trainer.register_hooks.

When is one rule, Every: the trainer's log steps (where it reads the stats to the host, once:
host_stats) are Trainer.log_every, and the PeriodicWriter writes at that same object's steps;
checkpoints and evaluations run at their own Every's steps before the end.
"""
import time

import paddle

from ..utils.progress import format_eta


def host_stats(stats):
    """``stats`` with its tensors read to Python floats in one device-to-host copy."""
    keys = [k for k, v in stats.items() if isinstance(v, paddle.Tensor)]
    if not keys:
        return dict(stats)
    values = paddle.concat([stats[k].reshape([1]).astype("float64") for k in keys]).numpy()
    return dict(stats, **{k: float(v) for k, v in zip(keys, values)})


class Every:
    """Due at every ``interval``-th iteration (0: none) and at the last, ``max_iters``.
    before_end leaves the last out: a checkpoint or an evaluation there is the end's own
    (CheckpointHook.after_train's, the caller's final Trainer.evaluate)."""

    def __init__(self, interval, max_iters):
        self.interval, self.max_iters = interval, max_iters

    def due(self, iteration):
        return (self.interval > 0 and iteration % self.interval == 0) or iteration == self.max_iters

    def before_end(self, iteration):
        return self.due(iteration) and iteration < self.max_iters


class Hook:
    trainer = None

    def before_train(self):
        pass

    def after_step(self, iteration, stats, batch_images):
        pass

    def after_eval(self, iteration, result):
        pass

    def after_train(self, iteration):
        pass


class Writer:
    """What a PeriodicWriter drives: start(), write(iteration, values, ips) at each due step,
    eval(iteration, result), end(iteration, images) with the images over all ranks this run."""
    trainer = None

    def start(self):
        pass

    def write(self, iteration, values, ips):
        pass

    def eval(self, iteration, result):
        pass

    def end(self, iteration, images):
        pass


class PeriodicWriter(Hook):
    """fast-reid's PeriodicWriter: at each due step of ``every`` (the trainer's log_every) every
    writer gets the same host values, the trainer's one copy of that step, and the same images/s
    over all ranks since the last write."""

    _trainer = None

    def __init__(self, every, writers):
        self.every, self.writers = every, list(writers)

    @property
    def trainer(self):
        return self._trainer

    @trainer.setter
    def trainer(self, trainer):
        self._trainer = trainer
        for w in self.writers:
            w.trainer = trainer

    def before_train(self):
        self.t, self.n, self.seen = time.time(), 0, 0
        for w in self.writers:
            w.start()

    def after_step(self, iteration, stats, batch_images):
        self.n += batch_images
        self.seen += batch_images
        if not self.every.due(iteration):
            return
        on_device = [k for k, v in stats.items() if isinstance(v, paddle.Tensor)]
        if on_device:  # reading them here would be a second wait for the device
            raise RuntimeError(f"iteration {iteration}: stats {on_device} are still on the device at a log "
                               f"step; the trainer reads them to the host (host_stats) at its log_every steps")
        ips = self.n * self.trainer.world_size / max(time.time() - self.t, 1e-9)
        for w in self.writers:
            w.write(iteration, stats, ips)
        self.t, self.n = time.time(), 0

    def after_eval(self, iteration, result):
        for w in self.writers:
            w.eval(iteration, result)

    def after_train(self, iteration):
        for w in reversed(self.writers):
            w.end(iteration, self.seen * self.trainer.world_size)


class TrainLogWriter(Writer):
    """The training log: start line, lr / losses / images/s / ETA at each write, summary."""

    def __init__(self, max_iters):
        self.max_iters = max_iters

    def start(self):
        t = self.trainer
        t.log.info(f"training {t.tasks} from iteration {t.start_iter} to {self.max_iters} "
                   f"on {t.world_size} process(es), per-step images per rank: "
                   f"{t.loader.batch_sampler.task_counts}")
        self.t0 = time.time()

    def write(self, iteration, values, ips):
        t, it = self.trainer, iteration
        eta = (time.time() - self.t0) / (it - t.start_iter) * (self.max_iters - it)
        per_task = ", ".join(f"{k}: {values[f'{k}/loss']:.4f}" for k in t.tasks if f"{k}/loss" in values)
        t.log.info(f"[Train][Iter: {it}/{self.max_iters}] lr: {t.lr.last_lr:.5f}, "
                   f"loss: {values['loss']:.4f} ({per_task}), ips: {ips:.1f} images/s, "
                   f"eta: {format_eta(eta)}")

    def end(self, iteration, images):
        t = self.trainer
        t.log.info(f"training done: {iteration - t.start_iter} iterations, {images} images in "
                   f"{format_eta(time.time() - self.t0)}; checkpoint {t.output_dir}/latest")


class VisualDLWriter(Writer):
    """Scalars to trainer.vdl: lr, images/s and every step stat at each write; eval score."""

    def write(self, iteration, values, ips):
        vdl = self.trainer.vdl
        vdl.add_scalar("train/lr", self.trainer.lr.last_lr, iteration)
        vdl.add_scalar("train/ips", ips, iteration)
        for k, v in values.items():
            vdl.add_scalar(f"train/{k}", v, iteration)

    def eval(self, iteration, result):
        if result["score"] is not None:
            self.trainer.vdl.add_scalar("eval/score", result["score"], iteration)


class CheckpointHook(Hook):
    """A checkpoint every save_interval (0: never) before the end, and one at the end:
    Trainer.save writes iter_N, points latest at it and prunes (rank 0), then every rank waits
    at a barrier."""

    def __init__(self, save_interval, max_iters):
        self.every = Every(save_interval, max_iters)

    def after_step(self, iteration, stats, batch_images):
        if self.every.before_end(iteration):
            self.trainer.save(iteration)

    def after_train(self, iteration):
        self.trainer.save(iteration)


class EvalHook(Hook):
    """Evaluates every eval_interval (0: never) before the end; after any evaluation, rank 0
    keeps the best score in trainer.best (saved in every checkpoint's states, restored on
    resume, and at least the score of a best_model already in the output folder) and saves
    best_model when it improves (Trainer.save_best); every rank then waits at a barrier."""

    def __init__(self, eval_interval, max_iters):
        self.every = Every(eval_interval, max_iters)

    def after_step(self, iteration, stats, batch_images):
        if self.every.before_end(iteration):
            self.trainer.evaluate(iteration)
            self.trainer.model.train()

    def after_eval(self, iteration, result):
        t = self.trainer
        if t.rank == 0 and result["score"] is not None:
            self.keep_best(iteration, result["score"])
        t.barrier()  # on every rank (evaluations are): none goes on while rank 0 writes best_model

    def keep_best(self, iteration, score):
        t = self.trainer
        if t.best["score"] is None or score > t.best["score"]:
            t.best = {"score": score, "iteration": iteration}
            t.save_best(iteration)
            t.log.info(f"new best score {score:.4f} at iteration {iteration}: saved {t.output_dir}/best_model")
        else:
            t.log.info(f"score {score:.4f} at iteration {iteration}; best_model keeps {t.best['score']:.4f} "
                       f"(iteration {t.best['iteration']})")
