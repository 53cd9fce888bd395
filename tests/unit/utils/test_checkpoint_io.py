"""A checkpoint save writes each byte once: the sha256 .pdstates records is taken from the bytes as
they are written, never by reading the files back."""
import hashlib
import io
import json
import os

import numpy as np
import paddle
import pytest

from ppufo.utils import checkpoint
from ppufo.utils.checkpoint import load_checkpoint, save_checkpoint


def make(width):
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(6, width), paddle.nn.Linear(width, width), paddle.nn.Linear(width, 3))
    return model, paddle.optimizer.AdamW(learning_rate=0.1, parameters=model.parameters())


def trained(width):
    model, opt = make(width)
    (model(paddle.ones([2, 6])) ** 2).mean().backward()
    opt.step()
    opt.clear_grad()
    return model, opt


def proc_io():
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="Linux /proc I/O counters")
def test_a_save_hashes_its_bytes_as_written_and_reads_nothing_back(tmp_path, monkeypatch):
    model, opt = trained(256)  # 0.27 MB of weights, twice that of AdamW moments
    monkeypatch.setattr(checkpoint, "_sha256", lambda path: pytest.fail(f"{path} read back to hash it"))
    before = proc_io()
    save_checkpoint(str(tmp_path / "iter_1"), model, opt, states={"iteration": 1})
    after = proc_io()
    written = sum(os.path.getsize(tmp_path / f"iter_1{e}") for e in (".pdparams", ".pdopt", ".pdstates"))
    assert written > 500_000
    assert after["rchar"] - before["rchar"] < 4096  # the old save read every byte back: > written
    assert written <= after["wchar"] - before["wchar"] < written + 4096  # each byte once
    files = json.loads((tmp_path / "iter_1.pdstates").read_text())["files"]
    for ext, rec in files.items():
        data = (tmp_path / f"iter_1{ext}").read_bytes()
        assert rec == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    again, opt2 = make(256)
    load_checkpoint(str(tmp_path / "iter_1"), again, opt2)  # checks those hashes as it reads
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_paddle_save_writes_a_bytesio_only_through_write(tmp_path):
    """What the write-side hash relies on (paddle.save takes a str path or a BytesIO): a write()
    override sees every byte, for a layer state dict and for a nested optimizer dict."""
    model, opt = trained(6)
    for obj in (model.state_dict(), {"optimizer": opt.state_dict(), "lr": {}}):
        seen = bytearray()

        class Tap(io.BytesIO):
            def write(self, data):
                seen.extend(data)
                return len(memoryview(data).cast("B"))
        tap = Tap()
        paddle.save(obj, tap)
        path = str(tmp_path / "plain")
        paddle.save(obj, path)
        assert tap.getbuffer().nbytes == 0 and bytes(seen) == open(path, "rb").read()
