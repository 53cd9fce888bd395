"""Features, gallery indexing and search with an exported ppufo model (Paddle Inference).

python deploy/python/predict_rec.py --model_dir inference/quickstart/person --images query.jpg
python deploy/python/predict_rec.py --model_dir ... --build_index gallery_folder_or_list --index_dir index/person
python deploy/python/predict_rec.py --model_dir ... --index_dir index/person --images queries/ --topk 5
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

from gallery import GalleryIndex, list_gallery  # noqa: E402
from predictor import FeaturePredictor  # noqa: E402

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
    """Exported model + the eval preprocessing recorded in its inference.yml."""

    def __init__(self, model_dir, batch_size=8, **predictor_kwargs):
        from ppufo.data.transforms import build_transforms
        self.predictor = FeaturePredictor(model_dir, max_batch_size=batch_size, **predictor_kwargs)
        self.transform = build_transforms(self.predictor.info["transforms"], where="inference.yml")
        self.batch_size = batch_size

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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--images", help="an image or a folder of images")
    p.add_argument("--build_index", help="gallery folder (<label>/<img>) or list file (path label)")
    p.add_argument("--index_dir", help="where the gallery index is (or is written)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--enable_mkldnn", type=int, default=1)
    p.add_argument("--cpu_threads", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8)
    a = p.parse_args()
    try:
        rec = Recognizer(a.model_dir, a.batch_size, device=a.device, enable_mkldnn=bool(a.enable_mkldnn),
                         cpu_threads=a.cpu_threads)
        if a.build_index:
            if not a.index_dir:
                sys.exit("error: --build_index needs --index_dir")
            paths, labels = list_gallery(a.build_index)
            GalleryIndex(rec.features(paths), labels, paths).save(a.index_dir)
            print(f"indexed {len(paths)} gallery images ({len(set(labels))} labels) -> {a.index_dir}")
        if a.images:
            files = image_list(a.images)
            feats = rec.features(files)
            if a.index_dir:
                hits = GalleryIndex.load(a.index_dir).search(feats, a.topk)
                for f, h in zip(files, hits):
                    print(json.dumps({"image": f, "top": h}))
            else:
                for f, v in zip(files, feats):
                    print(f"{f}: feature dim {len(v)}, first values {np.round(v[:4], 4).tolist()}")
    except (ImageError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
