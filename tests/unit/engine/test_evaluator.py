"""Evaluator: the paper-style row, and all 13 test protocols of the quickstart on demo data."""
import json
import logging
import re

import numpy as np
import pytest
from PIL import Image

from helpers import tiny_config
from ppufo.engine.eval_report import format_paper_row, report_results
from ppufo.engine.evaluator import PAPER_COLUMNS, Evaluator, configured_labels, paper_row
from ppufo.utils.errors import ConfigError, DataError

PAPER_ORDER = ["CALFW", "CPLFW", "LFW", "CFP-FF", "CFP-FP", "AgeDB-30", "Market1501", "DukeMTMC",
               "MSMT17", "VeRi-776", "VehicleID", "VeRi-Wild", "SOP"]


def result(task, label, dataset, cell):
    return {"task": task, "set": label, "dataset": dataset, "headline": cell}


def test_paper_row_puts_cells_in_the_paper_columns():
    results = [result("product", "SOP", "SOP", "81.00"),
               result("vehicle", "VeRiWild-10000", "VeRiWild", "70.00/50.00"),
               result("face", "cfp_fp", "FaceVerificationBin[cfp_fp]", "90.10"),
               result("vehicle", "VehicleID-2400", "VehicleID", "60.00/65.00"),
               result("face", "calfw", "FaceVerificationBin[calfw]", "91.20"),
               result("person", "CUHK03", "ImageList", "50.00/40.00"),
               result("vehicle", "VehicleID-800", "VehicleID", "66.00/70.00")]
    row = paper_row(results)
    assert list(dict.fromkeys(PAPER_COLUMNS.values())) == PAPER_ORDER  # both face/SOP layouts share columns
    assert list(row) == PAPER_ORDER + ["CUHK03", "VehicleID-800"]  # extra sets appended in order
    assert row["CALFW"] == "91.20" and row["CFP-FP"] == "90.10" and row["SOP"] == "81.00"
    assert row["VeRi-Wild"] == "70.00/50.00" and row["VehicleID"] == "60.00/65.00"
    assert row["VehicleID-800"] == "66.00/70.00" and row["CUHK03"] == "50.00/40.00"
    assert [row[c] for c in ("CPLFW", "LFW", "CFP-FF", "AgeDB-30", "Market1501", "DukeMTMC", "MSMT17",
                             "VeRi-776")] == ["-"] * 8
    ref = paper_row([result("face", "lfw", "FaceVerificationFilelist[lfw]", "99.00"),
                     result("product", "SOP", "SOPCsvList", "88.00")])  # the UFO reference's layouts
    assert list(ref) == PAPER_ORDER and ref["LFW"] == "99.00" and ref["SOP"] == "88.00"
    head, cells = format_paper_row(row).split("\n")
    names = [c.strip() for c in head.strip("|").split("|")]
    values = [c.strip() for c in cells.strip("|").split("|")]
    assert names == list(row) and values == list(row.values())
    assert values[names.index("VeRi-Wild")] == "70.00/50.00" and values[0] == "91.20"
    assert len(head) == len(cells) and head.index("| VeRi-Wild") == cells.index("| 70.00/50.00")


def test_a_label_shadowing_a_column_goes_under_task_and_label():
    row = paper_row([result("person", "Market1501", "Market1501", "1.00/1.00"),
                     result("person", "SOP", "Market1501", "2.00/2.00")])
    assert row["Market1501"] == "1.00/1.00" and row["SOP"] == "-" and row["person/SOP"] == "2.00/2.00"


def test_quickstart_evaluates_all_13_protocols(full_demo_root, tmp_path):
    from ppufo.engine.trainer import Trainer
    out = tmp_path / "eval"
    config = tiny_config(full_demo_root, out, ["Global.max_iters=1"])
    labels = configured_labels(config)
    assert list(labels) == ["lfw", "cplfw", "calfw", "cfp_ff", "cfp_fp", "agedb_30", "Market1501", "DukeMTMC",
                            "MSMT17", "VeRi776", "VehicleID-2400", "VeRiWild-10000", "SOP"]
    assert list(labels.values()) == ["verification"] * 6 + ["reid"] * 4 + ["vehicleid", "reid", "recall_at_k"]
    trainer = Trainer(config)
    summary = Evaluator(trainer.cfg, trainer.model).evaluate(tag="all")
    assert not (out / "eval_all.json").exists()  # evaluate computes only; the report writes
    assert "[Eval]" not in (out / "train.log").read_text()
    assert report_results(summary, str(out)) == str(out / "eval_all.json")
    row = summary["paper_row"]
    assert list(row) == PAPER_ORDER  # every set lands in its own column, none left over
    for col, cell in row.items():
        pattern = r"\d+\.\d\d" if col in PAPER_ORDER[:6] + ["SOP"] else r"\d+\.\d\d/\d+\.\d\d"
        assert re.fullmatch(pattern, cell), (col, cell)
    by_set = {r["set"]: r for r in summary["sets"]}
    assert by_set["cfp_ff"]["headline"] == row["CFP-FF"] and by_set["VeRiWild-10000"]["headline"] == row["VeRi-Wild"]
    assert by_set["VehicleID-2400"]["repeats"] == 10 and by_set["VehicleID-2400"]["num_gallery"] == 16
    assert by_set["DukeMTMC"]["num_queries"] == 32 and by_set["VeRiWild-10000"]["num_queries"] == 16
    with open(out / "eval_all.json") as fh:
        saved = json.load(fh)
    assert list(saved["paper_row"].items()) == list(row.items())
    log = (out / "train.log").read_text()
    assert format_paper_row(row) in log and "paper table (UFO column order" in log


def test_unknown_set_lists_the_configured_labels_without_opening_them(make_config):
    # DukeMTMC's demo root does not exist in the session demo: listing labels must not open it
    with pytest.raises(ConfigError, match=r"unknown test set\(s\) \['Nope'\]; configured: \['lfw', 'cplfw'.*'SOP'\]"):
        Evaluator(make_config(), model=None, only=["Nope"])


# ----------------------------------------------------------------------------- a user's own data

class MeanColour:
    """Stands in for a network: the feature is the image's mean colour, so images of one
    solid colour rank each other first and an identity's colour decides every score."""
    training = False

    def eval(self):
        pass

    def train(self):
        pass

    def embed(self, imgs, task, normalize=False):
        return imgs.mean(axis=[2, 3])


COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 9: (90, 90, 90)}


def own_lists(root, query_ids, gallery_ids):
    for split, ids in (("query", query_ids), ("gallery", gallery_ids)):
        rows = []
        for n, pid in enumerate(ids):
            path = root / split / f"{n}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 8, 3), COLOURS[pid], np.uint8)).save(path)
            rows.append(f"{split}/{n}.jpg {pid}\n")
        (root / f"{split}.txt").write_text("".join(rows))


def own_config(tmp_path, entry):
    config = tiny_config(str(tmp_path), tmp_path / "out")
    config["Tasks"] = {"person": {"test_sets": [{"name": "ImageList", "root": "mine", "alias": "mine", **entry}]}}
    return config


def test_own_list_query_without_match_is_scored_out_and_warned_about(tmp_path):
    # queries: ids 1, 2 and 9 (9 is not in the gallery); gallery: 1, 1, 2 and 3 (a distractor)
    own_lists(tmp_path / "mine", [1, 2, 9], [1, 1, 2, 3])
    config = own_config(tmp_path, {"query_list": "query.txt", "gallery_list": "gallery.txt"})
    assert configured_labels(config) == {"mine": "reid"}
    warned = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage()) if record.levelno >= logging.WARNING else None
    logging.getLogger("ppufo").addHandler(handler)
    try:
        summary = Evaluator(config, MeanColour()).evaluate()
        reader = list(warned)  # the list reader's own warning; the evaluation only computes
        report_results(summary, str(tmp_path / "out"))
    finally:
        logging.getLogger("ppufo").removeHandler(handler)
    res = summary["sets"][0]
    assert (res["protocol"], res["num_queries"], res["num_queries_without_match"]) == ("reid", 3, 1)
    assert (res["rank1"], res["mAP"]) == (1.0, 1.0)  # each valid query finds its colour first
    assert warned[len(reader):] == ["person/mine: 1 of 3 queries have no match to find (its id is not in the "
                                    "gallery, only under the query's camera, or a distractor id); left out of "
                                    "the scores"]
    assert not any("no match to find" in w for w in reader)


def test_own_list_errors_name_the_set_and_what_to_give(tmp_path):
    own_lists(tmp_path / "mine", [1, 2], [3, 3])
    config = own_config(tmp_path, {"query_list": "query.txt", "gallery_list": "gallery.txt"})
    with pytest.raises(DataError, match=r"test set person/mine \(ImageList, .*mine\): ImageList: no query of "
                                        r".*query.txt has a match in .*gallery.txt"):
        Evaluator(config, MeanColour()).evaluate()
    config = own_config(tmp_path, {"list_file": "query.txt"})
    with pytest.raises(ConfigError, match=r"Tasks.person.test_sets.0: ImageList has no test protocol; give "
                                          r"query_list \+ gallery_list \(protocol reid\) or test_list"):
        Evaluator(config, MeanColour())
    config = own_config(tmp_path, {"query_list": "query.txt"})
    with pytest.raises(ConfigError, match=r"Tasks.person.test_sets.0: ImageList: query_list and gallery_list "
                                          r"go together"):
        Evaluator(config, MeanColour())
