"""Search.chip=cpu_x86_any: the search picks the runtime as well as the subnet.

A runtime choice (ppufo.chips.RUNTIME_CHOICES) names a device and the runtimes that can serve it
there (cpu_x86: Paddle Inference, cpu_x86_ort: ONNX Runtime). A subnet's latency on it is its
latency on the faster runtime, so the budget admits a subnet when any runtime runs it in time and
the one search ranks every subnet on its best deployment. Measured (MeasuredLatency), each subnet
is exported once and timed on every runtime in the same interleaved group, so a drift of the
machine cannot favour one runtime; the cache keeps, beside that minimum, each runtime's ratio to
it (ratios survive the verification's rescaling, milliseconds would not). From tables
(FastestTable), each runtime's table is composed and the smaller sum taken.
"""
from ..chips import RUNTIME_CHOICES, chip_backend, runtime_chips
from ..utils.errors import ConfigError
from .cache import subnet_key
from .latency_table import load_table


class FastestTable:
    """subnet -> ms: the faster of the choice's runtimes, each composed from its shipped table."""
    exact = True

    def __init__(self, chip, space, image_shape, batch_size, path=None):
        if path:
            raise ConfigError(f"Search.latency_table={path}: Search.chip={chip} composes the shipped tables of "
                              f"{list(runtime_chips(chip))}, one file each; set Search.latency_table: null")
        self.tables = {c: load_table(c, space, image_shape, batch_size) for c in runtime_chips(chip)}
        self.measured = all(t.measured for t in self.tables.values())
        self.source = "per subnet the faster of " + ", ".join(
            f"{t.where} ({'measured' if t.measured else 'PLACEHOLDER estimate'})" for t in self.tables.values())
        machines = {c: t.provenance.get("machine") for c, t in self.tables.items()}
        self.warning = None
        if len(set(machines.values())) > 1:
            self.warning = (f"the {chip} tables were measured on different machines ({machines}): which runtime is "
                            f"faster is then not known; rebuild them on one machine (tools/build_latency_table.py "
                            f"-o Search.chip=<each>)")

    def by_runtime(self, subnet):
        return {c: t.latency(subnet) for c, t in self.tables.items()}

    def __call__(self, subnet):
        return min(self.by_runtime(subnet).values())


def runtime_lookup(latency, space):
    """subnet -> {runtime chip: ms} for a search on a runtime choice, from its latency source: a
    FastestTable, or the search's cached measurement (search.Measure over a MeasuredLatency; a
    measured subnet's cache record holds each runtime's ratio to the fastest)."""
    if isinstance(latency, FastestTable):
        return latency.by_runtime
    runtimes = latency.fn.runtimes

    def lookup(subnet):
        key = subnet_key(space, subnet)
        value, ratios = latency.cache.get(key), latency.cache.details.get(key)
        if value is None or ratios is None or sorted(ratios) != sorted(runtimes):
            raise ConfigError(f"{latency.cache.path}: no per-runtime latency of subnet {subnet.to_json()} "
                              f"(measured before the runtime choice?); use another Search.cache_dir")
        return {c: value * ratios[c] for c in runtimes}
    return lookup


def fastest(by_runtime):
    """{"chip", "backend", "latency_ms": {chip: ms}}: the runtime to deploy with (the first listed on a tie)."""
    chip = min(by_runtime, key=lambda c: by_runtime[c])
    return {"chip": chip, "backend": chip_backend(chip), "latency_ms": {c: float(v) for c, v in by_runtime.items()}}


def is_choice(chip):
    return chip in RUNTIME_CHOICES
