"""Side effects of the training loop as hooks (fast-reid style): the loop only steps.

Events: before_train(); after_step(iteration, stats, batch_images) with this rank's image
count; stats hold device tensors except every log interval, when the trainer has read them
to the host (host_stats: one copy), so a hook reads them only then. after_eval(iteration,
result) from Trainer.evaluate, which also runs outside the loop (tools/train.py's final
evaluation); after_train(iteration). after_train runs in reverse order, so hooks unwind like
nested with-blocks: the logger, registered first, reports last (after the final checkpoint). ``hook.trainer`` is set by Trainer.register_hooks.
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


class Throughput:
    """Images since the last report -> images/s over all ranks."""

    def __init__(self, interval, max_iters):
        self.interval, self.max_iters = interval, max_iters
        self.reset()

    def reset(self):
        self.t, self.n = time.time(), 0

    def due(self, iteration):
        return iteration % self.interval == 0 or iteration == self.max_iters

    def ips(self, world_size):
        return self.n * world_size / max(time.time() - self.t, 1e-9)


class LoggerHook(Hook):
    """The training log: start line, every log_interval lr / losses / images/s / ETA, summary."""

    def __init__(self, log_interval, max_iters):
        self.window = Throughput(log_interval, max_iters)

    def before_train(self):
        t = self.trainer
        t.log.info(f"training {t.tasks} from iteration {t.start_iter} to {self.window.max_iters} "
                   f"on {t.world_size} process(es), per-step images per rank: "
                   f"{t.loader.batch_sampler.task_counts}")
        self.t0, self.seen = time.time(), 0
        self.window.reset()

    def after_step(self, iteration, stats, batch_images):
        t, it, max_iters = self.trainer, iteration, self.window.max_iters
        self.seen += batch_images
        self.window.n += batch_images
        if not self.window.due(it):
            return
        ips, stats = self.window.ips(t.world_size), host_stats(stats)
        eta = (time.time() - self.t0) / (it - t.start_iter) * (max_iters - it)
        per_task = ", ".join(f"{k}: {stats[f'{k}/loss']:.4f}" for k in t.tasks if f"{k}/loss" in stats)
        t.log.info(f"[Train][Iter: {it}/{max_iters}] lr: {t.lr.last_lr:.5f}, "
                   f"loss: {stats['loss']:.4f} ({per_task}), ips: {ips:.1f} images/s, "
                   f"eta: {format_eta(eta)}")
        self.window.reset()

    def after_train(self, iteration):
        t = self.trainer
        t.log.info(f"training done: {iteration - t.start_iter} iterations, {self.seen * t.world_size} "
                   f"images in {format_eta(time.time() - self.t0)}; checkpoint {t.output_dir}/latest")


class VisualDLHook(Hook):
    """Scalars to trainer.vdl: lr, images/s and every step stat each log_interval; eval score."""

    def __init__(self, log_interval, max_iters):
        self.window = Throughput(log_interval, max_iters)

    def before_train(self):
        self.window.reset()

    def after_step(self, iteration, stats, batch_images):
        self.window.n += batch_images
        if not self.window.due(iteration):
            return
        vdl = self.trainer.vdl
        vdl.add_scalar("train/lr", self.trainer.lr.last_lr, iteration)
        vdl.add_scalar("train/ips", self.window.ips(self.trainer.world_size), iteration)
        for k, v in host_stats(stats).items():
            vdl.add_scalar(f"train/{k}", v, iteration)
        self.window.reset()

    def after_eval(self, iteration, result):
        if result["score"] is not None:
            self.trainer.vdl.add_scalar("eval/score", result["score"], iteration)


class CheckpointHook(Hook):
    """iter_N and latest every save_interval (0: never) before the end, then only the newest
    ``keep`` iter_N stay (0: all); latest at the end. Trainer.save and Trainer.prune_checkpoints
    act on rank 0 only."""

    def __init__(self, save_interval, max_iters, keep=0):
        self.interval, self.max_iters, self.keep = save_interval, max_iters, keep

    def after_step(self, iteration, stats, batch_images):
        if self.interval and iteration % self.interval == 0 and iteration < self.max_iters:
            self.trainer.save(f"iter_{iteration}", iteration)
            self.trainer.save("latest", iteration)
            if self.keep:
                self.trainer.prune_checkpoints(self.keep)

    def after_train(self, iteration):
        self.trainer.save("latest", iteration)


class EvalHook(Hook):
    """Evaluates every eval_interval (0: never) before the end; after any evaluation, rank 0
    keeps the best score in trainer.best (saved in every checkpoint's states, restored on
    resume, and at least the score of a best_model already in the output folder) and saves
    best_model when it improves."""

    def __init__(self, eval_interval, max_iters):
        self.interval, self.max_iters = eval_interval, max_iters

    def after_step(self, iteration, stats, batch_images):
        if self.interval and iteration % self.interval == 0 and iteration < self.max_iters:
            self.trainer.evaluate(iteration)
            self.trainer.model.train()

    def after_eval(self, iteration, result):
        t, score = self.trainer, result["score"]
        if t.rank != 0 or score is None:
            return
        if t.best["score"] is None or score > t.best["score"]:
            t.best = {"score": score, "iteration": iteration}
            t.save("best_model", iteration)
            t.log.info(f"new best score {score:.4f} at iteration {iteration}: saved {t.output_dir}/best_model")
        else:
            t.log.info(f"score {score:.4f} at iteration {iteration}; best_model keeps {t.best['score']:.4f} "
                       f"(iteration {t.best['iteration']})")
