"""Features, gallery indexing and search with an exported ppufo model (Paddle Inference or ONNX Runtime).

python deploy/python/predict_rec.py -c deploy/configs/inference_rec.yaml -o Global.model_dir=inference/quickstart/person \
    -o Global.infer_imgs=query.jpg                      # one deploy YAML per chip under deploy/configs/
python deploy/python/predict_rec.py --model_dir inference/quickstart/person --images query.jpg
python deploy/python/predict_rec.py --model_dir ... --build_index gallery_folder_or_list --index_dir index/person
python deploy/python/predict_rec.py --model_dir ... --index_dir index/person --images queries/ --topk 5

The flags are shorthands for deploy-config keys (--model_dir = Global.model_dir, ...); they
override the -c file, and -o overrides both.
"""
import argparse
import json
import os
import random
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from deploy_config import load_deploy_config, predictor_kwargs  # noqa: E402
from gallery import GalleryIndex, list_gallery  # noqa: E402
from predictor import FeaturePredictor, OnnxPredictor  # noqa: E402
from ppufo.utils.errors import ConfigError  # noqa: E402

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp")


class ImageError(ValueError):
    """An image that cannot be decoded or is not a supported format."""


def load_image(source):
    """RGB PIL image from a path or raw bytes; ImageError names what is wrong."""
    import io
    name = source if isinstance(source, str) else "<uploaded bytes>"
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"image not found: {name}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"cannot decode image {name}: {e}") from None


class Recognizer:
    """Exported model + the eval preprocessing recorded in its inference.yml (or ``transform_ops``)."""

    def __init__(self, model_dir, batch_size=8, transform_ops=None, use_onnx=False, **predictor_kwargs):
        from ppufo.data.transforms import build_transforms
        if use_onnx:
            self.predictor = OnnxPredictor(model_dir, **predictor_kwargs)
        else:
            self.predictor = FeaturePredictor(model_dir, max_batch_size=batch_size, **predictor_kwargs)
        where = "PreProcess.transform_ops" if transform_ops is not None else "inference.yml"
        ops = transform_ops if transform_ops is not None else self.predictor.info["transforms"]
        self.transform = build_transforms(ops, where=where)
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, cfg):
        """From a validated deploy config (deploy_config.load_deploy_config)."""
        g = cfg["Global"]
        if not g["model_dir"]:
            raise ConfigError("Global.model_dir: required (the folder written by tools/export_model.py)")
        return cls(g["model_dir"], g["batch_size"], cfg["PreProcess"]["transform_ops"],
                   g["use_onnx"], **predictor_kwargs(cfg))

    def features(self, sources):
        """Features of image paths (or bytes), decoded one batch at a time."""
        out = []
        for s in range(0, len(sources), self.batch_size):
            out.append(self.features_of_images([load_image(x) for x in sources[s:s + self.batch_size]]))
        return np.concatenate(out) if out else np.zeros((0, self.predictor.info["feature_dim"]), np.float32)

    def features_of_images(self, images):
        return self.predictor(np.stack([self.transform(im, random.Random(0)) for im in images]))


def image_list(path):
    if os.path.isdir(path):
        return [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.lower().endswith(IMG_EXT)]
    return [path]


# shorthand flag -> deploy-config key (kept from before deploy YAMLs existed)
FLAGS = {"model_dir": "Global.model_dir", "images": "Global.infer_imgs", "device": "Global.device",
         "enable_mkldnn": "Global.enable_mkldnn", "cpu_threads": "Global.cpu_num_threads",
         "batch_size": "Global.batch_size", "build_index": "IndexProcess.data_file",
         "index_dir": "IndexProcess.index_dir", "topk": "IndexProcess.return_k",
         "save_features": "Global.save_features"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="deploy YAML, e.g. deploy/configs/inference_rec.yaml")
    p.add_argument("-o", "--override", action="append", nargs="+", default=[],
                   help="Section.key=value (repeatable), e.g. Global.infer_imgs=query.jpg")
    p.add_argument("--model_dir")
    p.add_argument("--images", help="an image or a folder of images")
    p.add_argument("--build_index", help="gallery folder (<label>/<img>) or list file (path label)")
    p.add_argument("--index_dir", help="where the gallery index is (or is written)")
    p.add_argument("--topk", type=int)
    p.add_argument("--device")
    p.add_argument("--enable_mkldnn", type=int, choices=(0, 1))
    p.add_argument("--cpu_threads", type=int)
    p.add_argument("--batch_size", type=int)
    p.add_argument("--save_features", help=".npz file for the features and image paths")
    a = p.parse_args(argv)
    flags = [f"{key}={json.dumps(bool(v) if name == 'enable_mkldnn' else v)}"
             for name, key in FLAGS.items() if (v := getattr(a, name)) is not None]
    return a.config, flags + [o for group in a.override for o in group]


def run(cfg):
    """Build the gallery index and/or embed (and search) the images that ``cfg`` names."""
    g, idx = cfg["Global"], cfg["IndexProcess"]
    if not (idx["data_file"] or g["infer_imgs"]):
        raise ConfigError("nothing to do: set Global.infer_imgs (--images) and/or "
                          "IndexProcess.data_file (--build_index)")
    if idx["data_file"] and not idx["index_dir"]:
        raise ConfigError("IndexProcess.data_file (--build_index) needs IndexProcess.index_dir (--index_dir)")
    rec = Recognizer.from_config(cfg)
    if idx["data_file"]:
        paths, labels = list_gallery(idx["data_file"])
        GalleryIndex(rec.features(paths), labels, paths).save(idx["index_dir"])
        print(f"indexed {len(paths)} gallery images ({len(set(labels))} labels) -> {idx['index_dir']}")
    if not g["infer_imgs"]:
        return
    files = image_list(g["infer_imgs"])
    if not files:
        raise FileNotFoundError(f"Global.infer_imgs: no {'/'.join(IMG_EXT)} images in {g['infer_imgs']}")
    feats = rec.features(files)
    if g["save_features"]:
        os.makedirs(os.path.dirname(os.path.abspath(g["save_features"])), exist_ok=True)
        np.savez(g["save_features"], features=feats, paths=np.array(files))
        print(f"saved {len(files)} features -> {g['save_features']}")
    if idx["index_dir"]:
        hits = GalleryIndex.load(idx["index_dir"]).search(feats, idx["return_k"])
        for f, h in zip(files, hits):
            print(json.dumps({"image": f, "top": h}))
    else:
        for f, v in zip(files, feats):
            print(f"{f}: feature dim {len(v)}, first values {[round(float(t), 4) for t in v[:4]]}")


def main(argv=None):
    try:
        path, overrides = parse_args(argv)
        run(load_deploy_config(path, overrides))
    except (ImageError, FileNotFoundError, ValueError, ImportError) as e:  # ConfigError is a ValueError
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
