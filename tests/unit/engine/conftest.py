import sys
import types
import warnings

import pytest


@pytest.fixture
def gpu_amp(monkeypatch):
    """The GPU AMP path on this CPU: amp.available says yes and the GradScaler believes it is on a
    GPU. Paddle's autocast then does nothing here but records its state (helpers.autocast_now)."""
    from ppufo.engine import amp as amp_module
    monkeypatch.setattr(amp_module, "available", lambda device: True)
    gpu = types.SimpleNamespace(is_gpu_place=lambda: True)
    monkeypatch.setattr(sys.modules["paddle.amp.grad_scaler"], "_dygraph_tracer",
                        lambda: types.SimpleNamespace(_expected_place=gpu))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="amp_guard can only be enabled")
        yield
