"""Evaluate a multi-task model on every configured test set with that set's own protocol."""
import time

import numpy as np
import paddle
from tqdm import tqdm

from ..data.datasets import DATASETS, build_source
from ..data.datasets.base import ImageDataset
from ..data.loader import build_eval_loader, eval_parts
from ..metric import METRICS, build_protocol
from ..utils.dist import process_group
from ..utils.errors import ConfigError, DataError

EVAL_KEYS = ("metric", "alias", "flip_test")


class TestSet:
    def __init__(self, task, label, source, protocol, metric, flip):
        self.task, self.label, self.source = task, label, source
        self.protocol, self.metric, self.flip = protocol, metric, flip


def set_label(cfg):
    if cfg.get("alias"):
        return cfg["alias"]
    if cfg.get("set_name"):
        return cfg["set_name"]
    if cfg.get("test_size"):
        return f"{cfg['name']}-{cfg['test_size']}"
    return cfg["name"]


def build_test_sets(config, only=None):
    """Test sets from Tasks.<task>.test_sets; ``only`` limits them by label or task name."""
    out = []
    mcfg = config.get("Metric", {})
    for task, tcfg in config["Tasks"].items():
        for i, entry in enumerate(tcfg["test_sets"]):
            where = f"Tasks.{task}.test_sets.{i}"
            label = set_label(entry)
            if only and label not in only and task not in only:
                continue
            try:
                source = build_source({k: v for k, v in entry.items() if k not in EVAL_KEYS},
                                      config["Global"]["data_root"], where=where)
            except ConfigError as e:  # a reader's own check (ImageList's lists) names no entry
                raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
            if source.protocol is None:
                raise ConfigError(f"{where}: {source.name} has no test protocol{source.test_hint}")
            protocol = build_protocol(source.protocol, where)
            metric_cfg = dict(entry.get("metric") or {"name": protocol.metric})
            metric = METRICS.build(metric_cfg, where=f"{where}.metric", **mcfg)
            flip = entry.get("flip_test", protocol.flip)
            out.append(TestSet(task, label, source, protocol, metric, bool(flip)))
    if only:
        found = {s.label for s in out} | {s.task for s in out}
        missing = sorted(set(only) - found)
        if missing:
            raise ConfigError(f"eval: unknown test set(s) {missing}; configured: "
                              f"{list(configured_labels(config))}")
    return out


def configured_labels(config):
    """{label: protocol} of every configured test set, from the config (no dataset opened)."""
    out = {}
    for task, tcfg in config["Tasks"].items():
        for i, e in enumerate(tcfg["test_sets"]):
            try:
                out[set_label(e)] = DATASETS.get(e["name"]).protocol_of(e) if e["name"] in DATASETS else None
            except ConfigError as err:  # e.g. an ImageList whose lists and protocol disagree
                raise ConfigError(f"Tasks.{task}.test_sets.{i}: {err}") from None
    return out


class Rows:
    """The rows ``rows`` of a dataset, in that order: one rank's shard."""

    def __init__(self, dataset, rows):
        self.dataset, self.rows = dataset, rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.dataset[int(self.rows[i])]


def gather_rows(local, n, world):
    """All ranks' features in dataset order, on every rank; rank r holds rows r, r + world, ..."""
    import paddle.distributed as dist
    m = -(-n // world)
    padded = np.zeros((m, local.shape[1]), local.dtype)
    padded[:len(local)] = local
    parts = []
    dist.all_gather(parts, paddle.to_tensor(padded))
    out = np.empty((n, local.shape[1]), local.dtype)
    for r, part in enumerate(parts):
        out[r::world] = part.numpy()[:len(range(r, n, world))]
    return out


class Evaluator:
    """``progress`` False hides the per-split progress bars (a search evaluates hundreds of times)."""

    def __init__(self, config, model, only=None, progress=True):
        self.cfg, self.progress = config, progress
        self.model = model
        self.sets = build_test_sets(config, only)
        self.transform, self.batch_transform = eval_parts(config)  # uint8 samples, normalised per batch

    @property
    def has_sets(self):
        return bool(self.sets)

    @paddle.no_grad()
    def extract(self, records, ts, desc):
        """(features of every record, in order; the ImageDataset). Under a multi-process launch
        each rank embeds every world_size-th image and the shards are all-gathered, so every
        rank holds all features after 1/world_size of the work."""
        ds = ImageDataset([(ts.source, records)], transform=self.transform, relabel=False)
        rank, world = process_group()
        sharded = world > 1 and len(ds) >= world
        part = Rows(ds, np.arange(rank, len(ds), world)) if sharded else ds
        feats = []
        for imgs, _, _ in tqdm(build_eval_loader(part, self.cfg, self.batch_transform), desc=desc, leave=False,
                               disable=None if self.progress else True):
            f = self.model.embed(imgs, ts.task, normalize=False)
            g = self.model.embed(paddle.flip(imgs, axis=[3]), ts.task, normalize=False) if ts.flip else None
            with paddle.amp.auto_cast(enable=False):  # the features in fp32 under the evaluation's autocast too
                f = f.astype("float32") if g is None else f.astype("float32") + g.astype("float32")
                feats.append(paddle.nn.functional.normalize(f, axis=1).numpy())
        feats = np.concatenate(feats).astype(np.float32)
        return (gather_rows(feats, len(ds), world) if sharded else feats), ds

    def embed(self, ts):
        """{split: (features, ImageDataset)} of every split ``ts``'s protocol embeds."""
        splits, desc = ts.protocol.splits, f"{ts.task}/{ts.label}"
        return {s: self.extract(ts.protocol.records(ts.source, s), ts,
                                desc + (f" {s}" if len(splits) > 1 else "")) for s in splits}

    def run_set(self, ts):
        try:
            return ts.protocol.compute(ts.metric, ts.source, self.embed(ts))
        except DataError as e:  # the metric's own errors do not know the set
            raise DataError(f"test set {ts.task}/{ts.label} ({ts.source.name}, {ts.source.root}): {e}") from None

    def evaluate(self, tag="eval"):
        """{"tag", "score", "paper_row", "sets"} of every test set: computed only, nothing logged
        or written (eval_report.report_results does that)."""
        was_training = self.model.training
        self.model.eval()
        results = []
        try:
            for ts in self.sets:
                t = time.time()
                res, p = self.run_set(ts), ts.protocol
                results.append({"task": ts.task, "set": ts.label, "dataset": ts.source.name,
                                "protocol": p.name, "headline": p.headline(res),
                                "score": p.main_score(res), "seconds": round(time.time() - t, 2),
                                **res})
        finally:
            if was_training:
                self.model.train()
        scores = [r["score"] for r in results if r["score"] is not None]
        return {"tag": tag, "score": float(np.mean(scores)) if scores else None,
                "paper_row": paper_row(results), "sets": results}


# dataset (source name) -> column of the UFO paper tables, in the paper's order
FACE_COLUMNS = {"calfw": "CALFW", "cplfw": "CPLFW", "lfw": "LFW", "cfp_ff": "CFP-FF", "cfp_fp": "CFP-FP",
                "agedb_30": "AgeDB-30"}
# a column is filled from the official layout's reader or the UFO reference layout's
PAPER_COLUMNS = {**{f"{reader}[{s}]": col for s, col in FACE_COLUMNS.items()
                    for reader in ("FaceVerificationBin", "FaceVerificationFilelist")},
                 "Market1501": "Market1501", "DukeMTMC": "DukeMTMC", "MSMT17": "MSMT17",
                 "VeRi776": "VeRi-776", "VehicleID": "VehicleID", "VeRiWild": "VeRi-Wild", "SOP": "SOP",
                 "SOPCsvList": "SOP"}


def paper_row(results):
    """{column: headline cell} in the paper's column order, "-" for sets not evaluated; other
    sets (or a second set of a filled column) follow under their own label."""
    row = dict.fromkeys(PAPER_COLUMNS.values(), "-")
    for r in results:
        col = PAPER_COLUMNS.get(r["dataset"])
        if col is None or row[col] != "-":
            col = r["set"] if r["set"] not in row else f"{r['task']}/{r['set']}"
        row[col] = r["headline"]
    return row
