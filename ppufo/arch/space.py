"""The One-for-All search space and the Subnet it holds.

A Subnet runs the first ``depth`` blocks of the supernet; block i uses ``heads[i]`` attention
heads and the FFN path ``paths[i]`` -- "shared" (the FFN every task trains), "task" (the task's
own FFN) or "mix" (sigmoid(a) * shared + (1 - sigmoid(a)) * task, a learned per task and
block) -- with ``ratios[i]`` of the full hidden width. A Subnet names no task: the same choice
is applied to whichever task it is evaluated or extracted for.
"""
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..utils.errors import ConfigError
from .backbone.vit import vit_flops, vit_param_count

PATHS = ("shared", "task", "mix")


@dataclass(frozen=True)
class Subnet:
    depth: int
    heads: tuple
    paths: tuple
    ratios: tuple

    def __post_init__(self):
        for name in ("heads", "paths", "ratios"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self):
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d, where="subnet"):
        if not isinstance(d, dict) or sorted(d) != ["depth", "heads", "paths", "ratios"]:
            raise ConfigError(f"{where}: expected a mapping with keys depth, heads, paths, ratios; got {d!r}")
        try:
            return cls(int(d["depth"]), [int(h) for h in d["heads"]], [str(p) for p in d["paths"]],
                       [float(r) for r in d["ratios"]])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None


def load_subnet(path):
    """A Subnet from a JSON file: the subnet itself, or a search result {"subnet": {...}, ...}."""
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"subnet file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON: {e}") from None
    if isinstance(d, dict) and "subnet" in d:
        d = d["subnet"]
    return Subnet.from_dict(d, where=path)


def _choices(values, name, kind):
    out = tuple(sorted({kind(v) for v in values}))
    if not out:
        raise ConfigError(f"search space: {name} needs at least one choice")
    return out


class SearchSpace:
    """Choices of depth, heads per block, FFN path and FFN width ratio per block."""

    def __init__(self, embed_dim, depth, num_heads, head_dim, mlp_ratio, depths, heads, ratios,
                 paths=PATHS, patch_size=16, img_size=(224, 224), in_chans=3, qkv_bias=True):
        self.embed_dim, self.max_depth, self.max_heads = int(embed_dim), int(depth), int(num_heads)
        self.head_dim, self.mlp_ratio = int(head_dim), float(mlp_ratio)
        self.full_hidden = int(round(self.embed_dim * self.mlp_ratio))
        self.depths = _choices(depths, "depths", int)
        self.heads = _choices(heads, "heads", int)
        self.ratios = _choices(ratios, "ratios", float)
        self.paths = tuple(p for p in PATHS if p in set(paths))
        bad = sorted(set(paths) - set(PATHS))
        if bad or not self.paths:
            raise ConfigError(f"search space: paths {list(paths)}; allowed: {list(PATHS)}")
        if self.depths[0] < 1 or self.depths[-1] > self.max_depth:
            raise ConfigError(f"search space: depths {list(self.depths)} must lie in 1..{self.max_depth}")
        if self.heads[0] < 1 or self.heads[-1] > self.max_heads:
            raise ConfigError(f"search space: heads {list(self.heads)} must lie in 1..{self.max_heads}")
        if self.ratios[0] <= 0 or self.ratios[-1] > 1:
            raise ConfigError(f"search space: ratios {list(self.ratios)} must lie in (0, 1]")
        self.patch_size, self.in_chans, self.qkv_bias = int(patch_size), int(in_chans), bool(qkv_bias)
        h, w = img_size
        self.num_patches = (int(h) // self.patch_size) * (int(w) // self.patch_size)

    def hidden(self, ratio):
        return int(round(self.full_hidden * ratio))

    # -- members ---------------------------------------------------------------------------
    def validate(self, s, where="subnet"):
        """The Subnet if it lies in the space, else a ConfigError naming the bad choice."""
        if s.depth not in self.depths:
            raise ConfigError(f"{where}: depth {s.depth} not in {list(self.depths)}")
        for name, values, allowed in (("heads", s.heads, self.heads), ("paths", s.paths, self.paths),
                                      ("ratios", s.ratios, self.ratios)):
            if len(values) != s.depth:
                raise ConfigError(f"{where}: {len(values)} {name} for depth {s.depth}; expected one per block")
            for i, v in enumerate(values):
                if v not in allowed:
                    raise ConfigError(f"{where}: {name}[{i}] = {v!r} not in {list(allowed)}")
        return s

    def uniform(self, depth, heads, path, ratio):
        return Subnet(depth, [heads] * depth, [path] * depth, [ratio] * depth)

    def largest(self):
        """Every block, head and hidden unit; the mix path, which runs both FFNs."""
        path = "mix" if "mix" in self.paths else self.paths[-1]
        return self.uniform(self.depths[-1], self.heads[-1], path, self.ratios[-1])

    def smallest(self):
        return self.uniform(self.depths[0], self.heads[0], self.paths[0], self.ratios[0])

    def sample(self, rng):
        """A uniformly random Subnet; ``rng`` is a numpy RandomState (seeded by the caller)."""
        d = int(rng.choice(self.depths))
        return Subnet(d, [int(rng.choice(self.heads)) for _ in range(d)],
                      [str(rng.choice(self.paths)) for _ in range(d)],
                      [float(rng.choice(self.ratios)) for _ in range(d)])

    def resolve(self, spec, where="subnet"):
        """A Subnet from "largest", "smallest", a Subnet, a dict, or a JSON file path."""
        if isinstance(spec, Subnet):
            s = spec
        elif isinstance(spec, dict):
            s = Subnet.from_dict(spec, where)
        elif spec in ("largest", "smallest"):
            s = getattr(self, spec)()
        elif isinstance(spec, str) and spec.endswith(".json"):
            s = load_subnet(spec)
        else:
            raise ConfigError(f"{where}: {spec!r}; expected largest, smallest or a Subnet .json file")
        return self.validate(s, where)

    def size(self):
        """How many distinct subnets the space holds."""
        per_block = len(self.heads) * len(self.paths) * len(self.ratios)
        return sum(per_block ** d for d in self.depths)

    # -- encoding ----------------------------------------------------------------------------
    @property
    def encoding_length(self):
        return 1 + 6 * self.max_depth

    def encode(self, s):
        """Fixed-length vector: depth / max depth, then per block (active, heads / max heads,
        ratio, one-hot path); blocks past ``depth`` are all zero."""
        v = np.zeros(self.encoding_length, np.float64)
        v[0] = s.depth / self.max_depth
        for i in range(s.depth):
            j = 1 + 6 * i
            v[j:j + 3] = 1.0, s.heads[i] / self.max_heads, s.ratios[i]
            v[j + 3 + PATHS.index(s.paths[i])] = 1.0
        return v

    def decode(self, v):
        v = np.asarray(v, np.float64)
        if v.shape != (self.encoding_length,):
            raise ConfigError(f"encoding of shape {v.shape}; expected ({self.encoding_length},)")
        depth = int(round(v[0] * self.max_depth))
        blocks = [v[1 + 6 * i:7 + 6 * i] for i in range(depth)]
        return self.validate(Subnet(depth, [int(round(b[1] * self.max_heads)) for b in blocks],
                                    [PATHS[int(np.argmax(b[3:6]))] for b in blocks],
                                    [float(round(b[2], 6)) for b in blocks]), "decoded subnet")

    # -- cost without building the model --------------------------------------------------------
    def block_widths(self, s):
        """[(attention width, MLP hidden)] of the plain ViT extracted from ``s``: the mix path
        concatenates both FFNs' hidden units."""
        return [(h * self.head_dim, self.hidden(r) * (2 if p == "mix" else 1))
                for h, p, r in zip(s.heads, s.paths, s.ratios)]

    def params(self, s):
        """Backbone parameters of the extracted model (heads/classifiers excluded)."""
        return vit_param_count(self.embed_dim, self.patch_size, self.num_patches, self.block_widths(s),
                               self.in_chans, self.qkv_bias)

    def flops(self, s):
        return vit_flops(self.embed_dim, self.patch_size, self.num_patches, self.block_widths(s),
                         self.in_chans)

    def describe(self):
        return (f"depth {list(self.depths)}, heads {list(self.heads)}, FFN paths {list(self.paths)}, "
                f"ratios {list(self.ratios)} of {self.full_hidden}: {self.size():.3g} subnets "
                f"(~10^{math.log10(self.size()):.1f})")
