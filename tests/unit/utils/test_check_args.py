"""Field's ranges and lists, and check_args: the one mechanism behind every keyword-argument check."""
import inspect
import math

import numpy as np
import pytest

from ppufo.utils.config import Field, check_args
from ppufo.utils.errors import ConfigError
from ppufo.utils.registry import Registry, check_kwargs


@pytest.mark.parametrize("field, text", [
    (Field(int, min=1), ">= 1"), (Field(float, above=0), "> 0"), (Field(float, max=5), "<= 5"),
    (Field(float, below=1), "< 1"), (Field(int, min=0, max=9), "[0, 9]"),
    (Field(float, min=0, below=1.5), "[0, 1.5)"), (Field(float, above=0, max=1), "(0, 1]"),
    (Field(float, above=-1, below=1), "(-1, 1)"), (Field(float), ""),
])
def test_range_text(field, text):
    assert field.range_text() == text


def test_exclusive_bounds_refuse_the_bound_itself():
    f = Field(float, above=0, below=1)
    assert f.check(0.5, "k") == 0.5
    for bad in (0, 0.0, 1, 1.0, -3):
        with pytest.raises(ConfigError, match=rf"^k: {float(bad)!r} is out of range; allowed: \(0, 1\)$"):
            f.check(bad, "k")


def test_non_finite_floats_are_refused():
    for bad in (math.nan, math.inf, -math.inf, np.float32("nan")):
        with pytest.raises(ConfigError, match=r"^a\.b: (nan|inf|-inf) is not a finite number$"):
            Field(float).check(bad, "a.b")


def test_numbers_are_converted():
    assert Field(float).check(3, "k") == 3.0 and type(Field(float).check(3, "k")) is float
    assert type(Field(float).check(np.float32(0.25), "k")) is float
    assert type(Field(float).check(np.int64(2), "k")) is float
    v = Field(int, min=1).check(np.int32(4), "k")
    assert v == 4 and type(v) is int
    with pytest.raises(ConfigError, match=r"^k: expected int, got bool True$"):
        Field(int).check(True, "k")
    with pytest.raises(ConfigError, match=r"^k: expected float, got bool False$"):
        Field(float).check(False, "k")
    with pytest.raises(ConfigError, match=r"^k: expected int, got float 2\.0$"):
        Field(int).check(2.0, "k")


def test_items_check_every_element_and_need_one():
    f = Field((list, tuple), items=Field(int, min=1))
    assert f.check((1, 5), "topk") == [1, 5]
    with pytest.raises(ConfigError, match=r"^topk\.1: 0 is out of range; allowed: >= 1$"):
        f.check([1, 0], "topk")
    with pytest.raises(ConfigError, match=r"^topk\.0: expected int, got str '5'$"):
        f.check(["5"], "topk")
    with pytest.raises(ConfigError, match=r"^topk: expected at least one item, got \[\]$"):
        f.check([], "topk")
    # a scalar where a list is also allowed is checked as the field's own type
    g = Field((float, list), items=Field(float))
    assert g.check(1, "v") == 1.0 and g.check([1, 2], "v") == [1.0, 2.0]


@check_args(prob=Field(float, min=0, max=1), count=Field(int, min=1))
class Op:
    def __init__(self, prob=0.5, count=1, name="x"):
        self.prob, self.count, self.name = prob, count, name


class SubOp(Op):
    def __init__(self, prob=0.25):
        super().__init__(prob, 2)


@check_args(momentum=Field(float, min=0, max=1))
def make(learning_rate, momentum=0.9):
    return learning_rate, momentum


def test_check_args_converts_and_names_the_argument():
    op = Op(1, count=np.int64(3))
    assert (op.prob, op.count, op.name) == (1.0, 3, "x") and type(op.prob) is float and type(op.count) is int
    with pytest.raises(ConfigError, match=r"^Op\.prob: 1\.5 is out of range; allowed: \[0, 1\]$"):
        Op(1.5)
    with pytest.raises(ConfigError, match=r"^SubOp\.prob: -0\.5 is out of range"):  # the subclass's name
        SubOp(-0.5)
    with pytest.raises(ConfigError, match=r"^Op\.count: expected int, got str '2'$"):
        Op(count="2")
    assert make(0.1, 1) == (0.1, 1.0)
    with pytest.raises(ConfigError, match=r"^momentum: nan is not a finite number$"):  # a function: the caller prefixes
        make(0.1, momentum=float("nan"))
    with pytest.raises(TypeError, match="missing a required argument"):  # binding errors stay Python's
        make()


def test_check_args_keeps_the_signature_and_refuses_unknown_names():
    assert list(inspect.signature(Op).parameters) == ["prob", "count", "name"]
    assert list(inspect.signature(make).parameters) == ["learning_rate", "momentum"]
    assert set(Op.arg_fields) == set(SubOp.arg_fields) == {"prob", "count"} and set(make.arg_fields) == {"momentum"}
    with pytest.raises(TypeError, match=r"check_args: .*\.f has no argument\(s\) \['rate'\]"):
        @check_args(rate=Field(float))
        def f(lr):
            return lr


def test_registry_checks_the_fields_naming_the_config_key():
    reg = Registry("widget")
    reg.register(Op)
    reg.register(make, name="Make")
    assert reg.build({"name": "Op", "prob": 0}).prob == 0.0
    with pytest.raises(ConfigError, match=r"^Section\.op\.prob: 2\.0 is out of range; allowed: \[0, 1\]$"):
        reg.build({"name": "Op", "prob": 2}, where="Section.op")
    with pytest.raises(ConfigError, match=r"^Section\.make\.momentum: -1\.0 is out of range"):
        reg.build({"name": "Make", "learning_rate": 1, "momentum": -1}, where="Section.make")
    # an injected value is checked too
    with pytest.raises(ConfigError, match=r"^widget\.count: 0 is out of range; allowed: >= 1$"):
        reg.build({"name": "Op"}, count=0)
    assert check_kwargs(Op, {"prob": 1, "name": "y"}, "T.0.Op") == {"prob": 1.0, "name": "y"}
    with pytest.raises(ConfigError, match=r"^T\.0\.Op\.prob: expected float, got str 'high'$"):
        check_kwargs(Op, {"prob": "high"}, "T.0.Op")


def test_private_number_validators_are_gone():
    """Item 8 of issue 25: every keyword-argument range check goes through Field (check_args)."""
    import ppufo.arch.head as head
    import ppufo.data.samplers.identity as identity
    import ppufo.data.transforms as transforms
    import ppufo.metric as metric
    import ppufo.nas.latency_table as latency_table
    import ppufo.optimizer.lr as lr
    import ppufo.optimizer.optimizer as optimizer
    gone = {lr: ("_num", "_int"), optimizer: ("_num",), head: ("_check_positive_int", "_check_number"),
            transforms: ("_prob", "_number"), identity: ("_int",), latency_table: ("_positive",),
            metric: ("_ints",)}
    for module, names in gone.items():
        for name in names:
            assert not hasattr(module, name), f"{module.__name__}.{name}"
