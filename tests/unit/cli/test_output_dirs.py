"""train, eval and export check their output folder before any work: one error naming the key,
not an OSError traceback after the demo data, the evaluation or the tracing."""
import importlib
import os
import sys

import pytest

from helpers import ROOT


@pytest.mark.parametrize("tool, key", [("train", "Global.output_dir"), ("eval", "Global.output_dir"),
                                       ("export_model", "Export.save_dir")])
def test_an_unwritable_output_folder_stops_the_tool_first(tool, key, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    data = tmp_path / "demo"
    monkeypatch.setattr(sys, "argv", [tool, "-c", os.path.join(ROOT, "configs/quickstart.yaml"), "-o",
                                      f"{key}={blocker}/out", f"Global.data_root={data}",
                                      "Global.generate_demo_data=true",  # train would write demo data first
                                      f"Global.pretrained_model={tmp_path}/missing"])  # eval/export would load it
    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"ppufo.cli.{tool}").main()
    assert e.value.code == f"error: {key}={blocker}/out: {blocker} is a file, not a folder; choose another with -o {key}=..."
    assert not data.exists() and sorted(os.listdir(tmp_path)) == ["a_file"]
