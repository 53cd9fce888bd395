"""Exported Paddle Inference models give the training code's features."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from helpers import ROOT
from ppufo.engine.exporter import export_model
from ppufo.engine.trainer import Trainer
from ppufo.inference.predictor import FeaturePredictor, model_format
from ppufo.utils.errors import ConfigError


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    from helpers import tiny_config
    out = tmp_path_factory.mktemp("export")
    trainer = Trainer(tiny_config(demo_root, out, ["Global.max_iters=2"]))
    trainer.train()
    trainer.model.eval()
    return trainer, out


def test_export_matches_dygraph(trained):
    trainer, out = trained
    save = out / "pir"
    # the real tool, in its own process (legacy export needs FLAGS_enable_pir_api=0 at import)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "export_model.py"), "-c", str(out / "config.yaml"),
           "-o", f"Global.pretrained_model={out / 'latest'}", f"Export.save_dir={save}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(save)) == ["face", "person", "product", "vehicle"]
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype("float32")
    for task in ("person", "face"):
        d = str(save / task)
        assert model_format(d) == "pir"
        ref = trainer.model.embed(paddle.to_tensor(x), task).numpy()
        for mkldnn in (False, True):
            # small_model_mb=0: this tiny model would otherwise run with oneDNN off (predictor.small_model)
            got = FeaturePredictor(d, enable_mkldnn=mkldnn, cpu_threads=1, small_model_mb=0)(x)
            assert got.shape == (3, 128)
            assert np.abs(got - ref).max() <= 1e-4, (task, mkldnn, np.abs(got - ref).max())


def test_export_rejects_unknown_task_and_bad_input_shape(trained):
    trainer, out = trained
    cfg = dict(trainer.cfg)
    cfg["Export"] = {"save_dir": str(out / "x"), "task": "cat", "chip": "cpu_x86"}
    with pytest.raises(ConfigError, match="Export.task=cat"):
        export_model(trainer.model, cfg)
    cfg["Export"]["task"] = "person"
    d = export_model(trainer.model, cfg)["person"][0]
    with pytest.raises(ValueError, match=r"expected \[N, 3, 32, 32\]"):
        FeaturePredictor(d)(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(FileNotFoundError, match="inference.pdiparams"):
        model_format(str(out))


def test_gallery_search_finds_the_right_identity(trained, demo_root, tmp_path):
    """Export the person model, index the demo Market1501 gallery, query with the query set."""
    trainer, out = trained
    from ppufo.inference.gallery import GalleryIndex
    from ppufo.inference.recognizer import Recognizer
    from ppufo.utils.errors import DataError
    from ppufo.data.datasets import DATASETS
    cfg = dict(trainer.cfg)
    cfg["Export"] = {"save_dir": str(tmp_path / "inf"), "task": "person", "chip": "cpu_x86"}
    d = export_model(trainer.model, cfg)["person"][0]
    rec = Recognizer(d)
    src = DATASETS.build({"name": "Market1501", "root": os.path.join(demo_root, "market1501")})
    gallery = [r for r in src.gallery() if r.pid > 0]
    index = GalleryIndex(rec.features([r.key for r in gallery]), [str(r.pid) for r in gallery],
                         [r.key for r in gallery])
    index.save(str(tmp_path / "idx"))
    index = GalleryIndex.load(str(tmp_path / "idx"))
    # a gallery image queried against the index finds itself first with score ~1
    hit = index.search(rec.features([gallery[3].key]), k=3)[0]
    assert hit[0]["path"] == gallery[3].key and hit[0]["score"] > 0.999 and hit[0]["label"] == str(gallery[3].pid)
    queries = src.query()
    top = index.search(rec.features([q.key for q in queries]), k=5)
    acc = np.mean([any(h["label"] == str(q.pid) for h in t) for q, t in zip(queries, top)])
    assert acc > 5 / 16  # above chance for a 2-step model (16 identities, top-5)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode image .*bad.jpg: not a JPEG/PNG/BMP/WEBP image"):
        rec.features([gallery[0].key, str(bad)])
    with pytest.raises(DataError, match="image not found: .*missing.jpg"):
        rec.features([str(tmp_path / "missing.jpg")])


def test_http_service_answers_a_real_request(trained, demo_root, tmp_path):
    import json
    import threading
    import urllib.error
    import urllib.request
    from ppufo.inference.gallery import GalleryIndex
    from ppufo.inference.recognizer import Recognizer
    from ppufo.inference.serving import serve
    trainer, out = trained
    cfg = dict(trainer.cfg)
    cfg["Export"] = {"save_dir": str(tmp_path / "inf"), "task": "person", "chip": "cpu_x86"}
    d = export_model(trainer.model, cfg)["person"][0]
    root = os.path.join(demo_root, "market1501", "bounding_box_test")
    files = [os.path.join(root, n) for n in sorted(os.listdir(root)) if not n.startswith(("0000", "-1"))][:12]
    rec = Recognizer(d)
    GalleryIndex(rec.features(files), [os.path.basename(f)[:4] for f in files], files).save(str(tmp_path / "idx"))
    server = serve(d, str(tmp_path / "idx"), port=0, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        with open(files[5], "rb") as f:
            req = urllib.request.Request(url + "/predict?topk=3", data=f.read(), method="POST")
        body = json.load(urllib.request.urlopen(req, timeout=60))
        assert body["feature_dim"] == 128 and len(body["feature"]) == 128
        assert body["top"][0]["path"] == files[5] and body["top"][0]["score"] > 0.999 and len(body["top"]) == 3
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url + "/predict", data=b"junk", method="POST"), timeout=60)
        assert e.value.code == 400 and "cannot decode image" in json.load(e.value)["error"]
        assert json.load(urllib.request.urlopen(url + "/health", timeout=60))["gallery"] == 12
        # two predictor clones at once give the single-predictor features
        feats = {}

        def query(i):
            with open(files[i], "rb") as f:
                req = urllib.request.Request(url + "/predict", data=f.read(), method="POST")
            feats[i] = json.load(urllib.request.urlopen(req, timeout=60))["feature"]
        clients = [threading.Thread(target=query, args=(i,)) for i in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        np.testing.assert_allclose([feats[i] for i in range(8)], rec.features(files[:8]), atol=1e-5)
    finally:
        server.shutdown()
