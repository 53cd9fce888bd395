"""Budgets and reductions stated against the deployed model.

The article's claim (task subnets with 20-30% fewer parameters) is against the All-in-One model:
the plain ViT of the supernet's full width and depth with a single FFN per block, which is what
All-in-One deploys. The supernet's largest path (mix everywhere) runs two FFNs per block, so a
reduction against it alone looks about twice as large. Every printed reduction states both.
"""
from dataclasses import dataclass

from ..arch.backbone.vit import vit_flops, vit_param_count
from ..chips import RUNTIME_CHOICES
from ..utils.errors import ConfigError

KINDS = ("params", "flops")


def allinone_widths(space):
    """[(attention width, MLP hidden)] of the All-in-One ViT of ``space``'s full shape."""
    return [(space.max_heads * space.head_dim, space.full_hidden)] * space.max_depth


def allinone_cost(space, kind):
    """Backbone parameters or FLOPs per image of the All-in-One ViT of ``space``'s full shape."""
    count = vit_param_count if kind == "params" else vit_flops
    extra = (space.qkv_bias,) if kind == "params" else ()
    return count(space.embed_dim, space.patch_size, space.num_patches, allinone_widths(space),
                 space.in_chans, *extra)


def allinone_subnet(space):
    """The subnet whose extraction has the All-in-One's shape, or None if the space holds none."""
    path = next((p for p in ("shared", "task") if p in space.paths), None)
    if (path is None or space.depths[-1] != space.max_depth or space.heads[-1] != space.max_heads
            or space.ratios[-1] != 1.0):
        return None
    return space.uniform(space.max_depth, space.max_heads, path, 1.0)


def reductions(space, subnet):
    """{kind: {"subnet", "allinone", "largest", "vs_allinone", "vs_largest"}} for params and FLOPs;
    vs_* is subnet / reference - 1 (negative: smaller)."""
    largest = space.largest()
    out = {}
    for kind in KINDS:
        cost = space.params if kind == "params" else space.flops
        n, a, big = cost(subnet), allinone_cost(space, kind), cost(largest)
        out[kind] = {"subnet": n, "allinone": a, "largest": big, "vs_allinone": n / a - 1, "vs_largest": n / big - 1}
    return out


def _than(v):
    return f"{abs(v):.0%} {'fewer' if v <= 0 else 'more'} than"


def reduction_text(space, subnet, kind="params"):
    """'1.834M params: 35% fewer than the All-in-One ViT (2.821M), 60% fewer than the largest path (4.595M)'."""
    r = reductions(space, subnet)[kind]
    return (f"{r['subnet'] / 1e6:.4g}M {kind}: {_than(r['vs_allinone'])} the All-in-One ViT "
            f"({r['allinone'] / 1e6:.4g}M), {_than(r['vs_largest'])} the largest path ({r['largest'] / 1e6:.4g}M)")


@dataclass(frozen=True)
class Budget:
    """An absolute budget: ``type`` <= ``value``; ``fraction`` of the All-in-One's ``reference`` when
    it was given relative (else both None)."""
    type: str
    value: float
    fraction: float = None
    reference: float = None

    def text(self):
        rel = f" ({self.fraction:g} x the All-in-One ViT's {self.reference:.4g})" if self.fraction else ""
        return f"{self.type} <= {self.value:.4g}{rel}"

    def to_dict(self):
        return {"type": self.type, "value": self.value, "fraction_of_allinone": self.fraction,
                "allinone": self.reference}


def budget_type(search):
    """The budget's type: a relative budget's key, else Search.budget_type. Checks that a budget
    is given, a relative one is well formed and a runtime choice (Search.chip=cpu_x86_any) has a
    latency budget, so the CLI can refuse it before loading a model."""
    kind = _budget_type(search)
    if search.get("chip") in RUNTIME_CHOICES and kind != "latency_ms":
        raise ConfigError(f"Search.chip={search['chip']} picks the runtime by latency: it needs Search.budget_type: "
                          f"latency_ms (or a {{latency_ms: fraction}} budget), not {kind}")
    return kind


def _budget_type(search):
    b = search["budget"]
    if b is None:
        raise ConfigError(f"Search.budget: required (with Search.budget_type={search['budget_type']}), "
                          f"e.g. -o Search.budget=5, or {{params: 0.75}} of the All-in-One ViT")
    if isinstance(b, dict):
        if len(b) != 1 or next(iter(b)) not in ("params", "flops", "latency_ms"):
            raise ConfigError(f"Search.budget: {b!r}; a relative budget is one key of params, flops, latency_ms "
                              f"with a fraction of the All-in-One ViT, e.g. {{params: 0.75}}")
        kind = next(iter(b))
        f = b[kind]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ConfigError(f"Search.budget.{kind}: {f!r}; expected a fraction of the All-in-One ViT in (0, 1] "
                              f"(for more than the deployed model give an absolute Search.budget)")
        return kind
    return search["budget_type"]


def resolve_budget(search, space, latency_of=None):
    """The Budget of config["Search"]: Search.budget as a number (in Search.budget_type's units),
    or {type: fraction} of the All-in-One ViT with 0 < fraction <= 1 (larger than the deployed model:
    give an absolute budget). ``latency_of(subnet)`` times the All-in-One for a relative latency."""
    b, kind = search["budget"], budget_type(search)
    if not isinstance(b, dict):
        return Budget(kind, float(b))
    f = b[kind]
    if kind == "latency_ms":
        ref = allinone_subnet(space)
        if ref is None or latency_of is None:
            raise ConfigError(f"Search.budget.latency_ms: relative latency needs the All-in-One shape in the space "
                              f"(depth {space.max_depth}, heads {space.max_heads}, ratio 1.0, a shared or task "
                              f"path) and a latency source; give an absolute budget in ms")
        reference = float(latency_of(ref))
    else:
        reference = float(allinone_cost(space, kind))
    return Budget(kind, float(f) * reference, float(f), reference)
