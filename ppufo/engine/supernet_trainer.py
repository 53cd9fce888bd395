"""Supernet training: the All-in-One loop, each step combining the gradients of several subnets.

Sandwich rule: every step trains the subnets listed in Supernet.sandwich (largest, smallest,
random ...) on the same mixed batch, each task on its own subnet, then takes one optimiser
step on the mean (Supernet.combine: mean) or the sum of the passes' losses, so of their
gradients; clipping and weight decay act once, on the combined gradient. Random subnets are drawn per task from a generator seeded by (seed, iteration), so every
rank trains the same subnets and a resumed run draws what the uninterrupted one would have.
Under data parallel the passes' gradients accumulate on each rank and are all-reduced once per
step (Trainer.local_grads), not after every pass. Each pass adds its training FLOPs, on the
subnets it ran, to Trainer.train_flops (train_flops.py).
"""
import numpy as np
import paddle.nn.functional as F

from .calibrate import recalibrated
from ..utils.errors import ConfigError
from .trainer import Trainer, step_stats

KINDS = ("largest", "smallest", "random")


class SupernetTrainer(Trainer):
    def __init__(self, config):
        sc = config["Supernet"]
        bad = [k for k in sc["sandwich"] if k not in KINDS]
        if bad or not sc["sandwich"]:
            raise ConfigError(f"Supernet.sandwich: {sc['sandwich']}; expected a non-empty list of {list(KINDS)}")
        if sc["distill_weight"] and sc["sandwich"][0] != "largest":
            raise ConfigError("Supernet.distill_weight > 0 needs 'largest' first in Supernet.sandwich "
                              "(it is the teacher of the other subnets)")
        super().__init__(config)
        self.sync_once = True  # several backward passes per step
        self.space = self.model.space
        self.sandwich, self.distill_weight = list(sc["sandwich"]), float(sc["distill_weight"])
        self.pass_weight = 1.0 / len(self.sandwich) if sc["combine"] == "mean" else 1.0
        self.log.info(f"supernet search space: {self.space.describe()}; sandwich {self.sandwich}")

    def build_optimizer(self):
        """Tasks.<t>.lr_mult reaches t's FFN path and mixing logits (the model's task_parameters);
        the shared FFN path trains at Supernet.shared_lr_mult, and 0 freezes it: no gradient, so
        neither the LR nor weight decay moves it."""
        mult = self.cfg["Supernet"]["shared_lr_mult"]
        shared = self.model.shared_path_parameters()
        for p in shared:
            p.stop_gradient = mult == 0
        return super().build_optimizer([{"params": shared, "lr_mult": mult}] if mult else [])

    def may_skip_parameters(self):
        return True  # a subnet leaves out blocks, heads, FFN paths and other tasks' FFNs

    def pick(self, kind, rng):
        return self.space.sample(rng) if kind == "random" else getattr(self.space, kind)()

    def train_step(self, batch, iteration):
        images, labels = batch[:2]
        sizes = self.batch_sizes(batch, iteration)
        rng = np.random.RandomState((self.cfg["Global"]["seed"] * 1_000_003 + iteration) % 2 ** 32)
        stats, teacher, combined = {}, None, 0.0
        with self.local_grads():
            for i, kind in enumerate(self.sandwich):
                self.model.set_subnets({t: self.pick(kind, rng) for t in self.tasks})
                self.seed_step(iteration * len(self.sandwich) + i)
                total, parts, outs = self.forward_losses(images, labels, sizes)
                if teacher is not None and self.distill_weight:
                    d = sum(distill_loss(outs[t]["embedding"], teacher[t]) for t in outs)
                    parts["distill"] = {"loss": d}
                    total = total + self.distill_weight * d
                if kind == "largest" and teacher is None:
                    teacher = {t: o["embedding"].detach() for t, o in outs.items()}
                self.backward(total * self.pass_weight if self.pass_weight != 1.0 else total)
                combined = combined + total.detach().astype("float64") * self.pass_weight
                stats.update(step_stats(total, parts, prefix=f"{kind}{i}/"))
                if i == 0:
                    stats.update(step_stats(total, parts))
        self.apply_step()
        stats["loss"] = combined  # the loss the step descends
        return stats

    def evaluate(self, iteration):
        """Supernet.eval_subnet evaluated with its BN-neck statistics recomputed on
        Supernet.calibration_images training images per evaluated task (the running ones average
        every trained subnet: ppufo/engine/calibrate.py). The running statistics are put back after,
        so training goes on as if no evaluation had run; best_model keeps the ones it was scored with."""
        subnet = self.space.resolve(self.cfg["Supernet"]["eval_subnet"], "Supernet.eval_subnet")
        self.model.set_subnets(subnet)  # the next train_step sets its own subnets
        n = self.cfg["Supernet"]["calibration_images"]
        evaluated = [t for t in self.tasks if self.cfg["Tasks"][t]["test_sets"]]
        with self.amp.eval_autocast(), \
                recalibrated(self.cfg, self.model, evaluated, n, "Supernet.calibration_images") as done:
            if done:
                self.log.info(f"eval subnet: BN neck of {done} recalibrated on {n} training images each")
            saved = self.saved_weights
            if done:  # these weights are no iter_<n>'s: a best_model now is a full copy
                self.saved_weights = None
            try:
                return super().evaluate(iteration)
            finally:
                self.saved_weights = saved


def distill_loss(student, teacher):
    """1 - cosine similarity to the largest subnet's embedding, averaged over the batch."""
    return (1.0 - F.cosine_similarity(student, teacher, axis=1)).mean()
