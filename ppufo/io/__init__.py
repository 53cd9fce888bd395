"""The model's input/output contract, owned in one place: decoding an image (image.py) and
reading weights into a model (weights.py). Sits just above utils: data, arch, inference and
the tools all go through it, so training, evaluation and serving read the same bytes the
same way."""
