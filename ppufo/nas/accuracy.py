"""A subnet's accuracy: its metric on the task's validation sets, evaluated through the supernet
with inherited weights (no retraining), by the Evaluator.

Before each evaluation the task's BN-neck statistics can be recomputed for the subnet
(``calibration``, a ppufo.engine.calibrate.NeckCalibration; Search.calibration_images).

A quantised candidate (``int8``, a ppufo.slim.fake_quant.Int8Simulation) is scored as the int8
model it would become: the subnet extracted into a plain ViT (ppufo.nas.extract, its BN neck
calibrated first) and evaluated in simulated int8, calibrated as ppufo-quantize calibrates.

Validation sets are Search.val_sets (test-set entries, e.g. MSMT17's list_val split or sets
carved from identities the supernet never trained on); when null, the task's own test_sets
stand in, which is what the demo does (its supernet trains on the train split only, but then
the search selects on the sets it is later reported on: say so when publishing numbers).
"""
import copy
import os

import numpy as np

from ..engine.eval_report import no_match_warnings
from ..engine.evaluator import Evaluator
from ..utils.checkpoint import resolve_prefix, strip_prefix
from ..utils.errors import ConfigError
from ..utils.logger import get_logger


class SubnetAccuracy:
    """subnet -> mean of ``metric`` over ``task``'s validation sets ("score" = the paper's headline
    number: rank-1, verification accuracy or Recall@1). A measurement only computes: no
    table is logged and no file written."""

    def __init__(self, config, supernet, task, metric="score", val_sets=None, calibration=None, int8=None):
        if task not in config["Tasks"]:
            raise ConfigError(f"Search.task: {task!r} is not a task of this config; tasks: {list(config['Tasks'])}")
        cfg = copy.deepcopy(config)
        if val_sets is not None:
            if not isinstance(val_sets, list) or not val_sets:
                raise ConfigError(f"Search.val_sets: expected a non-empty list of test-set entries, got {val_sets!r}")
            cfg["Tasks"][task]["test_sets"] = copy.deepcopy(val_sets)
        elif not cfg["Tasks"][task]["test_sets"]:
            raise ConfigError(f"Search: task {task} has no Search.val_sets and no test_sets to evaluate on")
        if calibration is not None and calibration.task != task:
            raise ConfigError(f"SubnetAccuracy of {task}: the BN-neck calibration is of task {calibration.task}")
        if int8 is not None and int8.task != task:
            raise ConfigError(f"SubnetAccuracy of {task}: the int8 simulation is of task {int8.task}")
        self.supernet, self.task, self.metric, self.calibration, self.int8 = supernet, task, metric, calibration, int8
        self.config = cfg
        self.val_sets, self.global_cfg = cfg["Tasks"][task]["test_sets"], config["Global"]
        self.evaluator = Evaluator(cfg, supernet, only=[task], progress=False)
        self.warned = False
        self.sets = [s.label for s in self.evaluator.sets]

    @property
    def context(self):
        """What a cached measurement depends on (ppufo.nas.cache.MeasureCache refuses a mismatch)."""
        path = os.path.abspath(strip_prefix(self.global_cfg["pretrained_model"] or ""))
        weights = resolve_prefix(path, "Global.pretrained_model")[0] + ".pdparams"  # latest: the iter_N it names
        return {"measure": "accuracy", "task": self.task, "metric": self.metric, "checkpoint": path,
                "checkpoint_mtime": int(os.path.getmtime(weights)) if os.path.isfile(weights) else None,
                "image_shape": self.global_cfg["image_shape"], "val_sets": self.val_sets,
                "neck_calibration": self.calibration.context if self.calibration else None,
                **({"int8": self.int8.context} if self.int8 else {})}

    def evaluate_int8(self, subnet):
        from .extract import extract
        _, model = extract(self.config, self.supernet, [self.task], subnet,
                           [self.calibration] if self.calibration is not None else [])
        self.evaluator.model = model
        try:
            with self.int8(model, self.task):
                return self.evaluator.evaluate(tag=f"search_{self.task}_int8")
        finally:
            self.evaluator.model = self.supernet

    def value(self, result):
        if self.metric == "score":
            v = result["score"]
        elif self.metric in result:
            v = result[self.metric]
        else:
            keys = sorted(k for k, x in result.items() if isinstance(x, float))
            raise ConfigError(f"Search.metric={self.metric}: set {result['set']} reports {keys} (or use 'score')")
        if v is None:
            raise ConfigError(f"Search.metric={self.metric}: set {result['set']} has no headline score")
        return float(v)

    def __call__(self, subnet):
        if self.int8 is None:
            self.supernet.set_subnets({self.task: subnet})
            if self.calibration is not None:
                self.calibration(self.supernet)
            res = self.evaluator.evaluate(tag=f"search_{self.task}")
        else:
            res = self.evaluate_int8(subnet)
        if not self.warned:  # which queries have no match depends on the labels only: said once
            for w in no_match_warnings(res):
                get_logger().warning(w)
            self.warned = True
        return float(np.mean([self.value(r) for r in res["sets"]]))
