"""Batches from host memory to the training device without waiting for the device.

In dygraph, Paddle's DataLoader stops each batch on the GPU's host side: its buffered reader copies
the batch into CUDA-pinned host memory (pin_memory, on by default) and no further. Used as it is,
the batch is normalised with numpy on the training thread, and the first op to read a pinned tensor
copies it to the GPU with a blocking copy (Paddle's data transform). ToDevice instead enqueues one
copy per tensor on the device's stream (Tensor._copy_to(place, blocking=False), which
Tensor.cuda(blocking=False) and Tensor.to(..., blocking=False) call in Paddle 3.3.1), and the
training thread goes on.
"""
import collections

import paddle

KEEP = 2  # batches whose copies may still be in flight before the oldest is waited for
_in_flight = collections.deque()  # (event, host sources): process-wide, see ToDevice


def device_place(name):
    """Global.device -> the Place batches move to; None for the CPU, where they stay in host memory."""
    place = paddle.device.device_to_place(name)
    return None if place.is_cpu_place() else place


def on_host(tensor):
    """Whether ``tensor`` is in host memory: the CPU's, or pinned (what a GPU copies from)."""
    place = tensor.place
    return place.is_cpu_place() or place.is_cuda_pinned_place()


class ToDevice:
    """Copies the host tensors of a batch's fields (nested lists and dicts; other values pass as
    they are) to ``place`` without blocking.

    Paddle's non-blocking copy from pinned memory is a cudaMemcpyAsync on the device's stream that
    does not keep its source alive: freed, the pinned block can go to the reader thread for a later
    batch and be overwritten before the device has read it. So each call's sources are held until
    an event recorded after its copies has passed, by one process-wide queue (an iterator dropped
    mid-pass leaves its last batch covered); with more than KEEP calls in flight the oldest is
    waited for, which in training is long done (the step after a copy has read its result)."""

    def __init__(self, place, event=None):
        self.place, self.event = place, event  # event: a paddle.device.Event factory (tests: a stand-in)

    def __call__(self, fields):
        sources = []
        out = self.move(fields, sources)
        if sources:
            fence = (self.event or paddle.device.Event)()
            fence.record()
            _in_flight.append((fence, sources))
        release()
        return out

    def move(self, field, sources):
        if isinstance(field, dict):
            return {k: self.move(v, sources) for k, v in field.items()}
        if isinstance(field, (list, tuple)):
            return type(field)(self.move(v, sources) for v in field)
        if isinstance(field, paddle.Tensor) and on_host(field):
            sources.append(field)
            return field._copy_to(self.place, False)
        return field


def release():
    """Drop the sources of copies the device has done; wait for the oldest past KEEP."""
    while _in_flight and (len(_in_flight) > KEEP or _in_flight[0][0].query()):
        fence, _ = _in_flight.popleft()
        fence.synchronize()  # returns at once when it has passed
