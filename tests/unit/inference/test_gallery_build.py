"""ppufo-predict --build_index and ppufo-serve at start: bad galleries, lists, output folders and
flag values are refused with a message naming what is wrong (a real exported model, random weights)."""
import json
import logging
import os

import numpy as np
import paddle
import pytest
from PIL import Image

from helpers import ROOT
from ppufo.cli import predict_rec, serve as serve_cli
from ppufo.inference.gallery import GalleryIndex, list_gallery
from ppufo.inference.serving import serve
from ppufo.utils.logger import get_logger


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from ppufo.arch import build_model
    from ppufo.engine.exporter import export_task
    from ppufo.utils.config import load_config
    cfg = load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), ["Export.chip=cpu_x86"])
    paddle.seed(0)
    model = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    model.eval()
    out = str(tmp_path_factory.mktemp("model") / "person")
    export_task(model, "person", cfg, out)
    return out


@pytest.fixture
def gallery(tmp_path):
    rs = np.random.RandomState(0)
    for label in ("a", "b"):
        os.makedirs(tmp_path / "gal" / label)
        for i in range(2):
            Image.fromarray(rs.randint(0, 256, (64, 32, 3), dtype=np.uint8)).save(tmp_path / "gal" / label / f"{i}.jpg")
    return tmp_path / "gal"


class Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def predict(*args):
    """Exit message of ppufo-predict (None when it succeeds)."""
    try:
        predict_rec.main([str(a) for a in args])
    except SystemExit as e:
        return str(e.code)
    return None


def test_non_image_files_in_a_gallery_folder_are_skipped_and_counted(model_dir, gallery, tmp_path, capsys):
    (gallery / "a" / "notes.txt").write_text("taken on a Tuesday")
    (gallery / "b" / "Thumbs.db").write_bytes(b"\0\1")
    logged = Messages()
    get_logger().addHandler(logged)  # the ppufo logger does not propagate; its stream may be another test's
    try:
        assert predict("--model_dir", model_dir, "--build_index", gallery, "--index_dir", tmp_path / "idx") is None
    finally:
        get_logger().removeHandler(logged)
    log = " ".join(logged.messages)
    assert "skipped 2 non-image files" in log and "a/notes.txt" in log and "b/Thumbs.db" in log
    assert "indexed 4 gallery images" in capsys.readouterr().out
    assert GalleryIndex.load(str(tmp_path / "idx")).paths == list_gallery(str(gallery))[0]


def test_a_list_that_is_not_utf8_names_the_file_and_line(gallery, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"gal/a/0.jpg a\ngal/a/1.jpg caf\xe9\n")
    with pytest.raises(ValueError, match=r"list.txt:2: not UTF-8 text \(byte 0xe9 at byte 16 of the line"):
        list_gallery(str(lst))


@pytest.mark.parametrize("flag", ["--index_dir", "--save_features"])
def test_an_output_folder_that_cannot_be_written_fails_before_any_embedding(gallery, tmp_path, flag):
    (tmp_path / "a_file").write_text("")
    target = tmp_path / "a_file" / ("idx" if flag == "--index_dir" else "feats.npz")
    # the model folder does not exist: the output check comes before the model is even loaded
    args = ["--model_dir", tmp_path / "no_model", flag, target]
    args += ["--build_index", gallery] if flag == "--index_dir" else ["--images", gallery / "a"]
    message = predict(*args)
    key = "IndexProcess.index_dir" if flag == "--index_dir" else "Global.save_features"
    assert message.startswith(f"error: {key}=") and "cannot write to" in message and "a_file" in message


def test_an_empty_gallery_list_is_refused_before_embedding(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    message = predict("--model_dir", tmp_path / "no_model", "--build_index", tmp_path / "empty.txt",
                      "--index_dir", tmp_path / "idx")
    assert message == f"error: IndexProcess.data_file={tmp_path / 'empty.txt'}: no gallery images listed"


def test_a_query_against_an_index_of_another_dimension_is_refused(model_dir, gallery, tmp_path):
    GalleryIndex(np.eye(2, 64, dtype=np.float32), ["a", "b"], ["a", "b"]).save(str(tmp_path / "idx"))
    message = predict("--model_dir", model_dir, "--index_dir", tmp_path / "idx", "--images", gallery / "a")
    assert "features.npy: gallery features have dimension 64" in message and "gives 128" in message


def test_the_service_refuses_to_start_on_a_gallery_that_cannot_answer(model_dir, tmp_path):
    idx = tmp_path / "idx"
    GalleryIndex(np.eye(3, 128, dtype=np.float32), ["a", "b", "c"], ["a", "b", "c"]).save(str(idx))
    bad = {"empty": np.zeros((0, 128), np.float32), "dim": np.eye(3, 64, dtype=np.float32),
           "nan": np.where(np.eye(3, 128) > 0, np.nan, 0).astype(np.float32)}
    expected = {"empty": "gallery is empty", "dim": "dimension 64, but the model", "nan": "3 of 3 gallery features"}
    for name, feats in bad.items():
        np.save(idx / "features.npy", feats)
        if name == "empty":
            (idx / "gallery.json").write_text(json.dumps({"labels": [], "paths": []}))
        with pytest.raises(ValueError, match=f"features.npy: .*{expected[name]}"):
            serve(model_dir, str(idx), port=0)
        with pytest.raises(SystemExit, match=f"error: .*features.npy: .*{expected[name]}"):
            serve_cli.main(["--model_dir", model_dir, "--index_dir", str(idx), "--port", "0"])
        (idx / "gallery.json").write_text(json.dumps({"labels": list("abc"), "paths": list("abc")}))


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port: expected an integer >= 0 and <= 65535, got '70000'"),
    (["--port", "-1"], "--port: expected an integer >= 0 and <= 65535, got '-1'"),
    (["--max_pixels", "-1"], "--max_pixels: expected an integer >= 0, got '-1'"),
    (["--threads", "-1"], "--threads: expected an integer >= 0, got '-1'"),  # 0: the default (batching's or 2)
    (["--max_batch", "-1"], "--max_batch: expected an integer >= 0, got '-1'"),
    (["--per_client", "-2"], "--per_client: expected an integer >= 0, got '-2'"),
    (["--header_timeout", "0"], "--header_timeout: expected a number > 0, got '0'"),
    (["--request_timeout", "nan"], "--request_timeout: expected a number > 0, got 'nan'"),
    (["--header_timeout", "20", "--request_timeout", "10"], "--header_timeout (20) must not exceed"),
    (["--connection_limit", "x"], "--connection_limit: expected an integer >= 1, got 'x'"),
])
def test_serve_flags_out_of_range_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        serve_cli.parse_args(["--model_dir", "m"] + argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_serve_flag_defaults_and_bounds_pass():
    a = serve_cli.parse_args(["--model_dir", "m", "--port", "65535", "--max_pixels", "0", "--per_client", "0"])
    assert (a.port, a.max_pixels, a.per_client, a.header_timeout, a.request_timeout) == (65535, 0, 0, 10.0, 60.0)


@pytest.mark.parametrize("flag", ["--topk", "--batch_size", "--cpu_threads"])
def test_predict_rec_flags_out_of_range_are_usage_errors(flag, capsys):
    with pytest.raises(SystemExit) as e:
        predict_rec.parse_args(["--model_dir", "m", flag, "0"])
    assert e.value.code == 2 and f"{flag}: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_append_then_remove_grows_and_shrinks_the_saved_gallery(model_dir, gallery, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert predict("--model_dir", model_dir, "--build_index", gallery, "--index_dir", idx) is None
    rs = np.random.RandomState(1)
    os.makedirs(tmp_path / "more" / "c")
    for i in range(2):
        Image.fromarray(rs.randint(0, 256, (64, 32, 3), dtype=np.uint8)).save(tmp_path / "more" / "c" / f"{i}.jpg")
    assert predict("--model_dir", model_dir, "--append_index", tmp_path / "more", "--index_dir", idx) is None
    assert "appended 2 gallery images (ids 4..5)" in capsys.readouterr().out
    grown = GalleryIndex.load(str(idx))
    assert (grown.ids, grown.labels) == ([0, 1, 2, 3, 4, 5], ["a", "a", "b", "b", "c", "c"])

    assert predict("--model_dir", model_dir, "--index_dir", idx, "--images", tmp_path / "more" / "c", "--topk", "1") is None
    tops = [json.loads(line)["top"][0] for line in capsys.readouterr().out.splitlines()]
    assert [(t["id"], t["label"]) for t in tops] == [(4, "c"), (5, "c")]  # each appended image finds itself

    # removing needs no model: the model folder does not even exist
    assert predict("--model_dir", tmp_path / "no_model", "--index_dir", idx, "--remove_labels", "c",
                   "--remove_ids", "0") is None
    assert "removed 3 gallery items (ids [0, 4, 5])" in capsys.readouterr().out
    shrunk = GalleryIndex.load(str(idx))
    assert (shrunk.ids, shrunk.labels, shrunk.next_id) == ([1, 2, 3], ["a", "b", "b"], 6)
    message = predict("--index_dir", idx, "--remove_ids", "4")
    assert message == "error: no gallery item with id 4 (nothing removed)"
    assert GalleryIndex.load(str(idx)).ids == [1, 2, 3]


def test_append_and_remove_keep_the_saved_ivf_in_step_and_a_search_run_loads_it(model_dir, gallery, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert predict("--model_dir", model_dir, "--build_index", gallery, "--index_dir", idx, "--index_type", "ivf") is None
    os.makedirs(tmp_path / "more" / "c")
    for i in range(2):
        Image.fromarray(np.full((64, 32, 3), 60 * i, np.uint8)).save(tmp_path / "more" / "c" / f"{i}.jpg")
    assert predict("--model_dir", model_dir, "--append_index", tmp_path / "more", "--index_dir", idx) is None
    assert predict("--index_dir", idx, "--remove_ids", "0") is None
    saved = json.loads((idx / "gallery.json").read_text())
    assert saved["index_cache"]["spec"]["kind"] == "ivf" and saved["ids"] == [1, 2, 3, 4, 5]
    logged = Messages()
    get_logger().addHandler(logged)
    try:
        assert predict("--model_dir", model_dir, "--index_dir", idx, "--images", tmp_path / "more" / "c", "--topk", "1",
                       "--index_type", "ivf") is None
    finally:
        get_logger().removeHandler(logged)
    assert any("the saved ivf index matches the gallery; loaded, not built" in m for m in logged.messages)
    tops = [json.loads(line)["top"][0] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(t["id"], t["label"]) for t in tops] == [(4, "c"), (5, "c")]


@pytest.mark.parametrize("argv, message", [
    (["--build_index", "g", "--append_index", "h"], "--build_index and --append_index: one index operation per run"),
    (["--append_index", "h", "--remove_ids", "1"], "--append_index and --remove_ids/--remove_labels: one index"),
    (["--remove_ids", "-1"], "--remove_ids: expected an integer >= 0, got '-1'"),
])
def test_index_operations_one_per_run(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        predict_rec.parse_args(["--model_dir", "m", "--index_dir", "i"] + argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_append_or_remove_need_an_index_dir(tmp_path):
    assert predict("--remove_labels", "a") == ("error: IndexProcess.index_operation remove (--remove_ids / "
                                               "--remove_labels) needs IndexProcess.index_dir (--index_dir)")
    assert predict("--model_dir", "m", "--append_index", tmp_path).endswith(
        "IndexProcess.data_file (--append_index) needs IndexProcess.index_dir (--index_dir)")
