"""Features, gallery indexing and search with an exported ppufo model (Paddle Inference or ONNX Runtime).

ppufo-predict -c deploy/configs/inference_rec.yaml -o Global.model_dir=inference/quickstart/person \
    -o Global.infer_imgs=query.jpg                      # one deploy YAML per chip under deploy/configs/
ppufo-predict --model_dir inference/quickstart/person --images query.jpg
ppufo-predict --model_dir ... --build_index gallery_folder_or_list --index_dir index/person
ppufo-predict --model_dir ... --index_dir index/person --images queries/ --topk 5
ppufo-predict --model_dir ... --append_index new_folder_or_list --index_dir index/person   # grow it
ppufo-predict --index_dir index/person --remove_ids 3 17 --remove_labels 0042             # no model needed
ppufo-predict --model_dir ... --images query.jpg --backend onnxruntime   # = -o Global.use_onnx=true (default auto)

The flags are shorthands for deploy-config keys (--model_dir = Global.model_dir, ...); they
override the -c file, and -o overrides both.
"""
import argparse
import json
import sys

from ..inference.backends import BACKENDS, USE_ONNX
from ..inference.deploy_config import load_deploy_config
from ..inference.gallery_files import GalleryChanged
from ..inference.recognizer import run
from ..inference.search_index import INDEX_TYPES
from ..utils.config import arg_range

# shorthand flag -> deploy-config key (kept from before deploy YAMLs existed)
FLAGS = {"model_dir": "Global.model_dir", "images": "Global.infer_imgs", "device": "Global.device",
         "enable_mkldnn": "Global.enable_mkldnn", "cpu_threads": "Global.cpu_num_threads",
         "batch_size": "Global.batch_size", "build_index": "IndexProcess.data_file",
         "index_dir": "IndexProcess.index_dir", "topk": "IndexProcess.return_k",
         "save_features": "Global.save_features", "backend": "Global.use_onnx",
         "append_index": "IndexProcess.data_file", "remove_ids": "IndexProcess.remove_ids",
         "remove_labels": "IndexProcess.remove_labels", "index_type": "IndexProcess.index_type"}


def flag_value(name, v):
    """A flag's value as the deploy-config key takes it (JSON)."""
    if name == "enable_mkldnn":
        return json.dumps(bool(v))
    if name == "backend":
        return json.dumps(USE_ONNX[v])
    return json.dumps(v)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="deploy YAML, e.g. deploy/configs/inference_rec.yaml")
    p.add_argument("-o", "--override", action="append", nargs="+", default=[],
                   help="Section.key=value (repeatable), e.g. Global.infer_imgs=query.jpg")
    p.add_argument("--model_dir")
    p.add_argument("--images", help="an image or a folder of images")
    p.add_argument("--build_index", help="gallery folder (<label>/<img>) or list file (path label)")
    p.add_argument("--append_index", help="add these images (folder or list, as --build_index) to the index in "
                                          "--index_dir (IndexProcess.index_operation append)")
    p.add_argument("--remove_ids", type=arg_range(min=0), nargs="+", metavar="ID",
                   help="remove these ids from the index in --index_dir (index_operation remove)")
    p.add_argument("--remove_labels", nargs="+", metavar="LABEL",
                   help="remove every item with these labels from the index in --index_dir")
    p.add_argument("--index_dir", help="where the gallery index is (or is written)")
    p.add_argument("--index_type", choices=INDEX_TYPES,
                   help="faiss index built when the gallery loads (IndexProcess.index_type; default auto)")
    p.add_argument("--topk", type=arg_range(min=1))
    p.add_argument("--device")
    p.add_argument("--enable_mkldnn", type=int, choices=(0, 1))
    p.add_argument("--cpu_threads", type=arg_range(min=1))
    p.add_argument("--batch_size", type=arg_range(min=1))
    p.add_argument("--save_features", help=".npz file for the features and image paths")
    p.add_argument("--backend", choices=BACKENDS, help="paddle (Paddle Inference), onnxruntime (converts the model "
                                                        "to inference.onnx on first use) or auto (the default: ONNX "
                                                        "Runtime for a small model on CPU, else Paddle Inference)")
    a = p.parse_args(argv)
    ops = [f for f, on in (("--build_index", a.build_index), ("--append_index", a.append_index),
                           ("--remove_ids/--remove_labels", a.remove_ids or a.remove_labels)) if on]
    if len(ops) > 1:
        p.error(f"{' and '.join(ops)}: one index operation per run")
    flags = [f"{key}={flag_value(name, v)}" for name, key in FLAGS.items() if (v := getattr(a, name)) is not None]
    if a.append_index or a.remove_ids or a.remove_labels:
        flags.append(f"IndexProcess.index_operation={'append' if a.append_index else 'remove'}")
    return a.config, flags + [o for group in a.override for o in group]


def main(argv=None):
    try:
        path, overrides = parse_args(argv)
        run(load_deploy_config(path, overrides))
    except (OSError, ValueError, ImportError, GalleryChanged) as e:  # ConfigError, DataError are ValueErrors
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
