"""Per-layer latency tables (ppufo/chips/tables/<chip>.json): a subnet's latency on a chip that is
not present, composed as stem + sum over blocks of attention[heads] + ffn[hidden].

A file holds one or more tables, each for one model geometry (embed_dim, head_dim,
patch_size, image_shape, batch_size), with its provenance (measured on which machine and how,
or a placeholder estimate). Entries are milliseconds:

  stem       patch embedding, CLS + position embedding, final norm, neck and L2 normalisation
  attention  {heads: ms} one block's LayerNorm + qkv + attention + proj + residual
  ffn        {hidden: ms} one block's LayerNorm + fc1 + GELU + fc2 + residual; the extracted
             "mix" path is one MLP of twice the hidden width, so it looks up 2 * hidden

tools/build_latency_table.py writes them (measured with Paddle Inference, or estimated).
"""
import json
import os

from ..chips import table_path
from ..utils.config import Field
from ..utils.errors import ConfigError

GEOMETRY_KEYS = ("embed_dim", "head_dim", "patch_size", "image_shape", "batch_size")


def geometry(space, image_shape, batch_size):
    """The geometry a table must match for subnets of ``space``."""
    return {"embed_dim": space.embed_dim, "head_dim": space.head_dim, "patch_size": space.patch_size,
            "image_shape": [int(v) for v in image_shape], "batch_size": int(batch_size)}


def required_entries(space):
    """{"attention": heads choices, "ffn": hidden widths (the mix path doubles)} of ``space``."""
    hidden = {space.hidden(r) * (2 if p == "mix" else 1) for r in space.ratios for p in space.paths}
    return {"attention": sorted(space.heads), "ffn": sorted(hidden)}


MS = Field(float, above=0)  # a table entry, milliseconds


class LatencyTable:
    """A validated table; ``latency(subnet)`` composes its entries (ms)."""

    def __init__(self, entry, space, where):
        self.where, self.space = where, space
        self.provenance = entry.get("provenance")
        if not isinstance(self.provenance, dict) or "measured" not in self.provenance:
            raise ConfigError(f"{where}.provenance: required, a mapping with 'measured' (true/false) "
                              f"and how the entries were obtained")
        self.measured = bool(self.provenance["measured"])
        self.stem = MS.check(entry.get("stem"), f"{where}.stem")
        self.ops = {}
        for op, needed in required_entries(space).items():
            given = entry.get(op)
            if not isinstance(given, dict):
                raise ConfigError(f"{where}.{op}: expected a mapping {{width: ms}}, got {given!r}")
            if not all(str(k).isdigit() for k in given):
                raise ConfigError(f"{where}.{op}: keys must be integers, got {sorted(given)}")
            values = {int(k): MS.check(v, f"{where}.{op}.{k}") for k, v in given.items()}
            missing = [n for n in needed if n not in values]
            if missing:
                unit = "heads" if op == "attention" else "hidden units"
                raise ConfigError(f"{where}.{op}: no entry for {missing} {unit} (has {sorted(values)}); "
                                  f"the search space needs {needed}")
            self.ops[op] = values

    def terms(self, subnet):
        """[(name, ms)] whose sum is the subnet's latency."""
        out = [("stem", self.stem)]
        for i, (h, (_, hidden)) in enumerate(zip(subnet.heads, self.space.block_widths(subnet))):
            out += [(f"block{i}.attention[{h}]", self.ops["attention"][h]),
                    (f"block{i}.ffn[{hidden}]", self.ops["ffn"][hidden])]
        return out

    def latency(self, subnet):
        return float(sum(ms for _, ms in self.terms(self.space.validate(subnet))))

    __call__ = latency


def read_tables(path):
    """The raw JSON of a table file, checked for its top-level shape."""
    if not os.path.isfile(path):
        raise ConfigError(f"latency table not found: {path} (measure one on the device with "
                          f"python tools/build_latency_table.py -c <config> -o Search.chip=<chip>)")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tables"), list):
        raise ConfigError(f"{path}: expected {{\"chip\": ..., \"tables\": [...]}}")
    for i, t in enumerate(data["tables"]):
        if not isinstance(t, dict) or not isinstance(t.get("geometry"), dict):
            raise ConfigError(f"{path}: tables[{i}] needs a 'geometry' mapping with {list(GEOMETRY_KEYS)}")
    return data


def load_table(chip, space, image_shape, batch_size, path=None):
    """The table of ``chip`` for this space's geometry; errors name the file and what is missing."""
    path = table_path(chip, path)
    data = read_tables(path)
    if data.get("chip") != chip:
        raise ConfigError(f"{path}: table is for chip {data.get('chip')!r}, not {chip!r}")
    want = geometry(space, image_shape, batch_size)
    for i, t in enumerate(data["tables"]):
        if {k: t["geometry"].get(k) for k in GEOMETRY_KEYS} == want:
            return LatencyTable(t, space, f"{path}: tables[{i}]")
    have = [t["geometry"] for t in data["tables"]]
    raise ConfigError(f"{path}: no table for geometry {want}; it has {have}. Build one with "
                      f"python tools/build_latency_table.py")


def write_table(chip, entry, path=None):
    """Add ``entry`` to the chip's file, replacing a table of the same geometry."""
    path = table_path(chip, path)
    data = read_tables(path) if os.path.isfile(path) else {"chip": chip, "unit": "ms", "tables": []}
    data["tables"] = [t for t in data["tables"] if t["geometry"] != entry["geometry"]] + [entry]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    return path
