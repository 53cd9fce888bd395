import pytest

from serving_fakes import start_server


@pytest.fixture
def server():
    """start(recognizer=None, index=None, max_pixels=None, health_ttl=3.0, **FeatureServer options) ->
    a running FeatureServer on 127.0.0.1 (a free port), shut down after the test."""
    started = []
    yield lambda *args, **kwargs: start_server(started, *args, **kwargs)
    for srv in started:
        srv.shutdown()
