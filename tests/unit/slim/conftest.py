import pytest

from helpers import quantized_tiny


@pytest.fixture(scope="session")
def tiny_int8(demo_root, tmp_path_factory):
    """The tiny model and its int8 model, quantised once for the slim tests (helpers.quantized_tiny)."""
    return quantized_tiny(demo_root, tmp_path_factory.mktemp("quant"))
