"""Measurements cached on disk as JSON lines keyed by the subnet encoding, so an interrupted
search resumes without measuring anything twice.

The first line records what the file measures (checkpoint, metric, chip, batch size ...); a
file written for something else is refused rather than mixed in. A record may carry a "detail"
beside its value, from a measurement with ``detail(subnet)`` (the runtime choice: each runtime's
latency over the fastest one's).
"""
import json
import os
import time

import numpy as np
from ..utils.errors import ConfigError
from ..utils.progress import Progress


def subnet_key(space, subnet):
    return ",".join(f"{v:.6g}" for v in space.encode(subnet))


class MeasureCache:
    def __init__(self, path, context):
        self.path, self.context, self.values, self.details = path, dict(context), {}, {}
        if os.path.isfile(path) and os.path.getsize(path):
            self._read()
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(json.dumps({"context": self.context}) + "\n")

    def _read(self):
        with open(self.path) as f:
            lines = f.read().split("\n")
        try:
            head = json.loads(lines[0])["context"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{self.path}:1: not a measurement cache header ({lines[0][:80]!r})") from None
        if head != json.loads(json.dumps(self.context)):
            raise ConfigError(f"{self.path}: measured for {head}, but this search measures {self.context}; "
                              f"use another Search.cache_dir or delete the file")
        for i, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self.values[rec["key"]] = float(rec["value"])
                if rec.get("detail") is not None:
                    self.details[rec["key"]] = rec["detail"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                if i == len(lines):  # the last write was cut short: drop it, measure it again
                    with open(self.path, "w") as f:
                        f.write("\n".join(lines[:-1]) + "\n")
                    continue
                raise ConfigError(f"{self.path}:{i}: malformed record {line[:80]!r}") from None

    def __len__(self):
        return len(self.values)

    def get(self, key):
        return self.values.get(key)

    def add(self, key, subnet, value, seconds, detail=None):
        self.values[key] = float(value)
        rec = {"key": key, "subnet": subnet.to_dict(), "value": float(value), "seconds": round(seconds, 3)}
        if detail is not None:
            self.details[key] = rec["detail"] = detail
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()


def measure(space, subnets, fn, cache, desc):
    """fn(subnet) for every subnet not yet in ``cache`` (with progress and ETA); values of all, in
    order. A ``fn`` with ``measure_many`` and ``group`` (MeasuredLatency) gets up to ``group``
    subnets per call, measured together; each is cached as soon as its call returns. Such a call
    reports its own steps (``fn.steps(n)`` of them: exports, timing passes) through ``tick``, so a
    group of 40 subnets timed together over minutes shows progress too."""
    keys, todo = uncached(space, subnets, cache)
    many = getattr(fn, "measure_many", None)
    group = max(1, getattr(fn, "group", 1)) if many else 1
    chunks = [todo[i:i + group] for i in range(0, len(todo), group)]
    steps = getattr(fn, "steps", None) if many else None
    total = sum(steps(len(c)) for c in chunks) if steps else len(todo)
    with Progress(total, desc) as bar:
        for chunk in chunks:
            t = time.time()
            if many and steps:
                values = many([s for _, s in chunk], tick=bar.update)
            else:
                values = many([s for _, s in chunk]) if many else [fn(chunk[0][1])]
                bar.update(len(chunk))
            record(cache, chunk, values, (time.time() - t) / len(chunk), desc, details_of(fn, chunk))
    return np.array([cache.get(k) for k in keys], np.float64)


def uncached(space, subnets, cache):
    """(keys of ``subnets``, [(key, subnet)] of those not in ``cache``, without repeats)."""
    keys = [subnet_key(space, s) for s in subnets]
    return keys, list({k: s for k, s in zip(keys, subnets) if cache.get(k) is None}.items())


def details_of(fn, pairs):
    """``fn.detail(subnet)`` of each [(key, subnet)] just measured, or None where ``fn`` has none."""
    detail = getattr(fn, "detail", None)
    return [detail(s) for _, s in pairs] if detail else None


def record(cache, pairs, values, seconds, desc, details=None):
    """Cache ``values`` (and ``details``) of [(key, subnet)]; a non-finite value is an error, never stored."""
    for i, ((k, s), value) in enumerate(zip(pairs, values)):
        if not np.isfinite(value):
            raise ValueError(f"{desc}: measured {value} for subnet {s.to_json()}")
        cache.add(k, s, float(value), seconds, details[i] if details else None)
