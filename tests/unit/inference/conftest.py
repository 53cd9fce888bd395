import copy
import logging

import paddle
import pytest

from ppufo.inference.recognizer import Recognizer
from serving_fakes import start_server


@pytest.fixture
def server():
    """start(recognizer=None, index=None, max_pixels=None, health_ttl=3.0, allow_updates=False, save_dir=None,
    batch_wait_ms=5.0, max_batch=8, tasks=None, **FeatureServer options) ->
    a running FeatureServer on 127.0.0.1 (a free port), shut down after the test (serving_fakes.start_server)."""
    started = []
    yield lambda *args, **kwargs: start_server(started, *args, **kwargs)
    for srv in started:
        srv.shutdown()


@pytest.fixture(scope="module")
def exported(demo_root, tmp_path_factory):
    """(model, folder): a tiny untrained model (random weights are enough for equality) exported for
    'person' (32x32 input, 128-d feature)."""
    from helpers import tiny_config
    from ppufo.arch import build_model
    from ppufo.engine.exporter import export_model
    out = tmp_path_factory.mktemp("deploy")
    cfg = tiny_config(demo_root, out, ["Export.task=person", f"Export.save_dir={out / 'inf'}"])
    paddle.seed(0)
    model = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    model.eval()
    d = export_model(model, cfg)["person"][0]
    return model, d


@pytest.fixture
def built(monkeypatch):
    """The deploy configs Recognizer.from_config is called with (it returns a name, builds nothing)."""
    configs = []
    monkeypatch.setattr(Recognizer, "from_config",
                        classmethod(lambda cls, cfg: configs.append(copy.deepcopy(cfg)) or f"rec{len(configs)}"))
    return configs


@pytest.fixture
def ppufo_log():
    """The messages the 'ppufo' logger emits during the test (it does not propagate to caplog)."""
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("ppufo")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)
