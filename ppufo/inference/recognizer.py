"""Image features with an exported ppufo model: the model's own eval preprocessing (recorded in
its inference.yml) in front of a Paddle Inference or ONNX Runtime predictor; gallery indexing
(build, append, remove) and search for a deploy config (ppufo/inference/deploy_config.py)."""
import copy
import json
import os
import random
import tempfile

import numpy as np

from ..data.datasets.image_list import IMG_EXT, is_image
from ..data.transforms import build_transforms
from ..io.image import decode_image
from ..utils.errors import ConfigError
from ..utils.logger import get_logger
from .backends import build_predictor, config_backend
from .deploy_config import predictor_kwargs
from .gallery import GalleryIndex, list_gallery
from .predictor import model_transforms
from .search_index import IndexSettings

# Formats the deploy tools and the service decode; others (EPS runs Ghostscript, TIFF and ICO carry
# odd decoders) are refused.
FORMATS = ("JPEG", "PNG", "BMP", "WEBP")


class Recognizer:
    """Exported model + the eval preprocessing recorded in its inference.yml (or ``transform_ops``),
    run by ``backend`` (backends.BACKENDS)."""

    def __init__(self, model_dir, batch_size=8, transform_ops=None, backend="auto", **predictor_kwargs):
        self.predictor = build_predictor(model_dir, backend, max_batch_size=batch_size, **predictor_kwargs)
        if transform_ops is not None:
            self.transform = build_transforms(transform_ops, where="PreProcess.transform_ops")
        else:
            self.transform = model_transforms(model_dir, self.predictor.info)
        self.batch_size, self.model_dir = batch_size, model_dir

    @classmethod
    def from_config(cls, cfg):
        """From a validated deploy config (deploy_config.load_deploy_config)."""
        g = cfg["Global"]
        if g.get("tasks"):
            raise ConfigError(f"Global.tasks: lists task models for ppufo-serve ({', '.join(g['tasks'])}); this "
                              f"runs one model: give -o Global.model_dir=<folder> -o Global.tasks=null")
        if not g["model_dir"]:
            raise ConfigError("Global.model_dir: required (the folder written by tools/export_model.py)")
        return cls(g["model_dir"], g["batch_size"], cfg["PreProcess"]["transform_ops"],
                   config_backend(cfg), **predictor_kwargs(cfg))

    def clone(self):
        """The same model and preprocessing for another thread (see FeaturePredictor.clone; an ONNX
        Runtime session is shared)."""
        other = copy.copy(self)
        other.predictor = self.predictor.clone()
        return other

    def features(self, sources):
        """Features of image paths (or bytes), decoded one batch at a time."""
        out = []
        for s in range(0, len(sources), self.batch_size):
            images = [decode_image(x, FORMATS) for x in sources[s:s + self.batch_size]]
            out.append(self.features_of_images(images))
        return np.concatenate(out) if out else np.zeros((0, self.predictor.info["feature_dim"]), np.float32)

    def preprocess(self, image):
        """One decoded image -> the model's input array [3, H, W] (the eval transforms: no randomness)."""
        return self.transform(image, random.Random(0))

    def features_of_arrays(self, arrays):
        """Preprocessed arrays (``preprocess``) -> their features, one predictor call."""
        return self.predictor(np.stack(arrays))

    def features_of_images(self, images):
        return self.features_of_arrays([self.preprocess(im) for im in images])


def image_list(path):
    if os.path.isdir(path):
        return [os.path.join(path, n) for n in sorted(os.listdir(path)) if is_image(n)]
    return [path]


def check_writable(folder, key):
    """Create ``folder`` if needed and write a scratch file in it, so that a read-only or impossible
    output folder fails (ConfigError naming ``key``) before any image is embedded."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"{key}: cannot write to {folder}: it is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{key}: cannot write to {folder}: {e.strerror or e}") from None


def remove_from_gallery(idx, settings):
    """IndexProcess.index_operation remove: no model needed."""
    index = GalleryIndex.load(idx["index_dir"], settings, exact=True)  # edited and saved only: Flat builds at once
    removed = index.remove(idx["remove_ids"] or (), idx["remove_labels"] or ())
    index.save(idx["index_dir"])
    print(f"removed {len(removed)} gallery items (ids {removed}) -> {idx['index_dir']} ({len(index)} items)")


def append_to_gallery(index, idx, rec, paths, labels):
    """IndexProcess.index_operation append: ``index`` (loaded exact) grows by the images ``paths``."""
    index.check_dim(rec.predictor.info["feature_dim"], rec.model_dir)
    again = set(paths) & set(index.paths)
    if again:
        get_logger().warning(f"{idx['data_file']}: {len(again)} of the {len(paths)} images are already in "
                             f"{idx['index_dir']} (added again, under new ids), e.g. {sorted(again)[:3]}")
    ids = index.add(rec.features(paths), labels, paths)
    index.save(idx["index_dir"])
    print(f"appended {len(ids)} gallery images (ids {ids[0]}..{ids[-1]}) -> {idx['index_dir']} ({len(index)} items)")


def run(cfg):
    """Build, grow or shrink the gallery index and/or embed (and search) the images ``cfg`` names."""
    g, idx = cfg["Global"], cfg["IndexProcess"]
    op, settings = idx["index_operation"], IndexSettings.from_config(idx)
    if not (idx["data_file"] or g["infer_imgs"] or op == "remove"):
        raise ConfigError("nothing to do: set Global.infer_imgs (--images) and/or "
                          "IndexProcess.data_file (--build_index)")
    if (idx["data_file"] or op == "remove") and not idx["index_dir"]:
        flag = {"new": "data_file (--build_index)", "append": "data_file (--append_index)",
                "remove": "index_operation remove (--remove_ids / --remove_labels)"}[op]
        raise ConfigError(f"IndexProcess.{flag} needs IndexProcess.index_dir (--index_dir)")
    if idx["data_file"] or op == "remove":
        check_writable(idx["index_dir"], f"IndexProcess.index_dir={idx['index_dir']}")
    if op == "remove":
        remove_from_gallery(idx, settings)
    if idx["data_file"]:
        paths, labels = list_gallery(idx["data_file"])
        if not paths:
            raise ConfigError(f"IndexProcess.data_file={idx['data_file']}: no gallery images listed")
    if op == "append":  # the saved gallery is checked before the model loads
        growing = GalleryIndex.load(idx["index_dir"], settings, exact=True)
    if g["infer_imgs"] and g["save_features"]:
        check_writable(os.path.dirname(os.path.abspath(g["save_features"])),
                       f"Global.save_features={g['save_features']}")
    if not (idx["data_file"] or g["infer_imgs"]):
        return
    rec = Recognizer.from_config(cfg)
    if op == "append":
        append_to_gallery(growing, idx, rec, paths, labels)
    elif idx["data_file"]:
        GalleryIndex(rec.features(paths), labels, paths, where=idx["data_file"], settings=settings).save(idx["index_dir"])
        print(f"indexed {len(paths)} gallery images ({len(set(labels))} labels) -> {idx['index_dir']}")
    if not g["infer_imgs"]:
        return
    files = image_list(g["infer_imgs"])
    if not files:
        raise FileNotFoundError(f"Global.infer_imgs: no {'/'.join(IMG_EXT)} images in {g['infer_imgs']}")
    feats = rec.features(files)
    if g["save_features"]:
        np.savez(g["save_features"], features=feats, paths=np.array(files))
        print(f"saved {len(files)} features -> {g['save_features']}")
    if idx["index_dir"]:
        index = GalleryIndex.load(idx["index_dir"], settings)
        index.check_dim(feats.shape[1], g["model_dir"])
        hits = index.search(feats, idx["return_k"])
        for f, h in zip(files, hits):
            print(json.dumps({"image": f, "top": h}))
    else:
        for f, v in zip(files, feats):
            print(f"{f}: feature dim {len(v)}, first values {[round(float(t), 4) for t in v[:4]]}")
