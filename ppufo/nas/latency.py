"""Subnet latency on a chip: measured with the chip's runtime where the chip is present, composed
from its per-layer table (latency_table.py) where it is not.

A measurement is what a user deploys: the subnet is extracted to a plain ViT, exported with the
exporter into a temporary folder, loaded with the chip's predictor (ppufo.inference.backends:
Paddle Inference, or ONNX Runtime on the converted model for cpu_x86_ort) and timed at the
configured batch size: warm-up runs, then a quantile of the timed runs.
"""
import shutil
import tempfile
import time
from contextlib import contextmanager

import numpy as np

from ..chips import CHIPS, QUANTIZED_CHIPS, chip_absent, chip_backend, chip_present, measurable, runtime_chips
from ..inference.backends import RUNTIME_NAMES, build_predictor
from ..utils.errors import ConfigError
from .latency_table import geometry, load_table
from .runtime_choice import FastestTable, is_choice


def chip_predictor(model_dir, chip, cpu_threads, batch_size=1):
    """The predictor ``chip`` deploys with (ppufo.chips.CHIPS), ``cpu_threads`` on a CPU."""
    opts = dict(CHIPS[chip])
    backend = opts.pop("backend", "paddle")
    if opts["device"] == "cpu":
        opts["cpu_threads"] = cpu_threads
    if opts.get("use_tensorrt"):  # engines tuned for, and limited to, the batch that is timed
        opts.update(max_batch_size=batch_size, opt_batch_size=batch_size)
    return build_predictor(model_dir, backend, **opts)


TIMERS = {"wall": time.perf_counter, "thread_cpu": time.thread_time}


def check_timer(timer, cpu_threads):
    if timer not in TIMERS:
        raise ConfigError(f"Search.timer={timer!r}; expected one of {sorted(TIMERS)}")
    if timer == "thread_cpu" and cpu_threads != 1:
        raise ConfigError(f"Search.timer=thread_cpu counts the calling thread only: it needs Search.cpu_threads=1, "
                          f"got {cpu_threads}")


def time_interleaved(predictors, x, warmup, repeats, rounds=1, timer="wall", seed=None, quantile=0.5, tick=None):
    """ms of each predictor: the ``quantile`` of ``repeats`` timed runs on ``x`` (0.5: the median),
    after ``warmup`` runs.

    The runs are spread over ``rounds`` passes; each pass times a burst of every predictor in a
    fresh random order. On a shared machine the speed of the core drifts over seconds (other
    jobs, caches, the sibling thread), so subnets timed one after the other are ranked partly by
    when they ran; interleaved, every subnet sees the same drift (benchmark/gpnas_quality.py
    measures the gain). The order is fresh per call (``seed`` None), so two measurements do not
    share an ordering bias. ``timer`` may also be a clock function. ``tick()`` after each pass."""
    clock = TIMERS[timer] if isinstance(timer, str) else timer
    for pred in predictors:
        for _ in range(warmup):
            pred(x)
    burst = max(1, -(-repeats // max(1, rounds)))
    times = [[] for _ in predictors]
    rng = np.random.RandomState(seed)
    for _ in range(max(1, rounds)):
        for i in rng.permutation(len(predictors)):
            pred = predictors[i]
            for _ in range(burst):
                t = clock()
                pred(x)
                times[i].append(clock() - t)
        if tick is not None:
            tick()
    return [1e3 * float(np.quantile(t, quantile)) for t in times]


def time_model_dirs(dirs, chip, batch_size, warmup, repeats, cpu_threads=1, timer="wall", rounds=1, quantile=0.5,
                    tick=None):
    """ms of each exported model in ``dirs`` on ``chip`` (or on ``chip[i]`` for dirs[i]): loaded
    together, timed interleaved (time_interleaved).

    timer "wall" is the latency a user sees. "thread_cpu" is the CPU time of the calling thread,
    where a 1-thread CPU predictor does all its work. On an idle machine it gives the same
    number, but it leaves out the time other processes hold the core, which on a shared machine
    varies severalfold from one second to the next (measurements: docs/notes/chip_search.md)."""
    check_timer(timer, cpu_threads)
    chips = [chip] * len(dirs) if isinstance(chip, str) else list(chip)
    preds = [chip_predictor(d, c, cpu_threads, batch_size) for d, c in zip(dirs, chips)]
    return time_interleaved(preds, batch_input(preds[0], batch_size), warmup, repeats, rounds, timer,
                            quantile=quantile, tick=tick)


def batch_input(pred, batch_size):
    return np.random.RandomState(0).rand(batch_size, *pred.info["image_shape"]).astype("float32")


@contextmanager
def temp_dirs():
    """A list to add temporary folders to; all are removed on exit."""
    dirs = []
    try:
        yield dirs
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


class MeasuredLatency:
    """subnet -> ms: extract from the supernet, export, time with the chip's runtime.

    ``measure_many`` times up to ``group`` subnets together, interleaved over ``rounds`` passes
    (time_interleaved); ppufo.nas.cache.measure uses it for the subnets it has not cached. On a
    runtime choice (runtime_choice.py) every subnet is timed on each runtime in that same group and
    its latency is the fastest's; ``detail(subnet)`` then gives each runtime's ratio to it."""
    exact = False

    def __init__(self, config, supernet, task, chip, batch_size=1, warmup=10, repeats=50, cpu_threads=1,
                 timer="wall", rounds=1, group=1, quantile=0.5):
        check_timer(timer, cpu_threads)
        if chip in QUANTIZED_CHIPS:  # its predictor would refuse (or mistime) the float export of a subnet
            raise ConfigError(f"Search.chip={chip} runs int8 models, and the search exports its candidate subnets "
                              f"in float (their int8 accuracy is simulated); use Search.latency=table "
                              f"(ppufo/chips/tables/{chip}.json, timed on quantised probes)")
        if not measurable(chip):
            raise ConfigError(f"Search.chip={chip}: cannot be timed here; "
                              f"use Search.latency=table (ppufo/chips/tables/{chip}.json)")
        if rounds < 1 or group < 1 or repeats < 1:
            raise ConfigError(f"Search: repeats {repeats}, rounds {rounds} and interleave {group} must be >= 1")
        if not 0 <= quantile <= 1:
            raise ConfigError(f"Search.quantile={quantile}: expected a fraction in [0, 1] (0.5 = the median)")
        self.config, self.supernet, self.task, self.chip = config, supernet, task, chip
        self.batch_size, self.warmup, self.repeats, self.cpu_threads = batch_size, warmup, repeats, cpu_threads
        self.timer, self.rounds, self.group, self.quantile, self.measured = timer, rounds, group, quantile, True
        self.runtimes, self._ratios = runtime_chips(chip), {}
        how = f", interleaved in groups of {group} over {rounds} passes" if group > 1 or rounds > 1 else ""
        stat = "median" if quantile == 0.5 else f"{quantile:g} quantile of the"
        runtime = " / ".join(f"{RUNTIME_NAMES[chip_backend(c)]} ({c})" for c in self.runtimes)
        self.source = (f"{'the faster per subnet of ' if is_choice(chip) else ''}{runtime} on this machine, "
                       f"{cpu_threads} thread(s), batch {batch_size}, {stat} {timer} time of {repeats} runs{how}")

    def __call__(self, subnet):
        return self.measure_many([subnet])[0]

    @property
    def context(self):
        """What a cached measurement depends on (ppufo.nas.cache.MeasureCache refuses a mismatch)."""
        return {"measure": "latency", "chip": self.chip, "warmup": self.warmup, "repeats": self.repeats,
                "rounds": self.rounds, "interleave": self.group, "quantile": self.quantile,
                "cpu_threads": self.cpu_threads, "timer": self.timer,
                **({"runtimes": list(self.runtimes)} if is_choice(self.chip) else {}),
                **geometry(self.supernet.space, self.config["Global"]["image_shape"], self.batch_size)}

    def steps(self, n):
        """Progress steps of measure_many on n subnets: one export each, then the timing passes."""
        return n + max(1, self.rounds)

    def measure_many(self, subnets, tick=None):
        import paddle

        from ..engine.exporter import export_task
        from .extract import extract
        # exported as for the chip timed (the attention layout depends on it: exporter.attention_layout)
        config = {**self.config, "Export": {**self.config["Export"], "chip": self.chip}}
        with temp_dirs() as dirs:
            for subnet in subnets:
                _, model = extract(config, self.supernet, [self.task], subnet)
                dirs.append(tempfile.mkdtemp(prefix="ppufo_latency_"))
                with paddle.no_grad():
                    export_task(model, self.task, config, dirs[-1])
                if tick is not None:
                    tick()
            ms = time_model_dirs(dirs * len(self.runtimes), [c for c in self.runtimes for _ in dirs], self.batch_size,
                                 self.warmup, self.repeats, self.cpu_threads, self.timer, self.rounds, self.quantile,
                                 tick=tick)
        per_runtime = np.reshape(ms, (len(self.runtimes), len(subnets)))
        best = per_runtime.min(axis=0)
        if is_choice(self.chip):
            for subnet, col, b in zip(subnets, per_runtime.T, best):
                self._ratios[subnet.to_json()] = {c: round(float(v / b), 6) for c, v in zip(self.runtimes, col)}
        return [float(b) for b in best]

    def detail(self, subnet):
        """On a runtime choice: {runtime chip: its ms / the fastest's} of the last timing of ``subnet``."""
        return self._ratios.get(subnet.to_json())


class TableLatency:
    """subnet -> ms composed from ppufo/chips/tables/<chip>.json."""
    exact = True

    def __init__(self, chip, space, image_shape, batch_size, path=None):
        self.table = load_table(chip, space, image_shape, batch_size, path)
        self.measured = self.table.measured
        how = "measured" if self.measured else "PLACEHOLDER estimate, not measured"
        self.source = f"latency table {self.table.where} ({how})"

    def __call__(self, subnet):
        return self.table.latency(subnet)


def build_latency(search, config, supernet, task):
    """The latency source of Search.latency: measure, table, or auto (measure if the chip is here)."""
    mode, chip = search["latency"], search["chip"]
    if mode == "auto":
        mode = "measure" if measurable(chip) and chip_present(chip) and chip not in QUANTIZED_CHIPS else "table"
    if mode == "measure":
        if not chip_present(chip):
            raise ConfigError(f"Search.latency=measure: chip {chip} is not present on this machine "
                              f"({chip_absent(chip)}); use Search.latency=table")
        return MeasuredLatency(config, supernet, task, chip, search["batch_size"], search["warmup"],
                               search["repeats"], search["cpu_threads"], search["timer"], search["rounds"],
                               search["interleave"], search["quantile"])
    table = FastestTable if is_choice(chip) else TableLatency
    return table(chip, supernet.space, config["Global"]["image_shape"], search["batch_size"], search["latency_table"])
