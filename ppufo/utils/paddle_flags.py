"""Paddle global flags set for the span of a block (export, a predictor's first run)."""
import contextlib
import threading

_LOCK = threading.Lock()  # flags are process-wide: two threads must not interleave set and restore


@contextlib.contextmanager
def paddle_flags(flags):
    """Paddle global ``flags`` set within the block, their old values put back after (errors too)."""
    import paddle
    with _LOCK:
        old = paddle.get_flags(list(flags))
        paddle.set_flags(flags)
        try:
            yield
        finally:
            paddle.set_flags(old)
