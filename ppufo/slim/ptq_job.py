"""The int8 quantisation of one task model, run in its own legacy-mode process (legacy.LEGACY_ENV):
``python -m ppufo.slim.ptq_job <job.json>``, started by quantize.quantize_task.

Steps: the task's feature model (the config's model with the job's weights) traced as a float
legacy program (legacy.save_legacy); Paddle's static PostTrainingQuantization run over the
calibration images (``images``, an .npy array the parent drew, read without pickle); the quantised
program (quantize_linear / dequantize_linear around every matmul, int8 weights, the
ONNX-style format Paddle Inference's oneDNN int8 passes read) saved as inference.pdmodel +
inference.pdiparams in ``out_dir``, and every ``@scale`` tensor it holds in ``scales.json``.

job.json keys: config (a YAML written by dump_config, Global.pretrained_model the weights), task,
images, out_dir, work_dir (scratch: the float program), algo, batch_size, weight_quantize_type.
"""
import json
import os
import sys

import numpy as np

# every Linear traces to matmul_v2 (+ add), as do the attention's two activation matmuls
QUANTIZABLE_OPS = ["matmul_v2"]


def read_scales(model_dir):
    """{name: [floats]} of every ``@scale`` tensor of the quantised program in ``model_dir``."""
    import paddle
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(os.path.join(model_dir, "inference"), exe)
        names = sorted(v.name for v in program.list_vars() if v.persistable and v.name.endswith("@scale"))
        return {n: np.asarray(scope.find_var(n).get_tensor()).astype(float).ravel().tolist() for n in names}


def quantize_program(float_dir, images, out_dir, algo, batch_size, weight_quantize_type):
    """PostTrainingQuantization of the legacy float program in ``float_dir`` (inference.pdmodel),
    calibrated on ``images``, written to ``out_dir`` (inference.pdmodel + .pdiparams + scales.json).
    Leaves paddle in static mode."""
    import paddle
    from paddle.static.quantization import PostTrainingQuantization
    b = int(batch_size)

    def batches():
        for i in range(0, len(images), b):
            yield {"x": images[i:i + b]}

    paddle.enable_static()
    ptq = PostTrainingQuantization(
        executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=float_dir,
        model_filename="inference.pdmodel", params_filename="inference.pdiparams",
        data_loader=batches, batch_nums=-(-len(images) // b), algo=algo,
        quantizable_op_type=QUANTIZABLE_OPS, weight_quantize_type=weight_quantize_type,
        onnx_format=True, is_full_quantize=False)
    ptq.quantize()
    ptq.save_quantized_model(out_dir, model_filename="inference.pdmodel", params_filename="inference.pdiparams")
    with open(os.path.join(out_dir, "scales.json"), "w") as f:
        json.dump(read_scales(out_dir), f)


def run(job):
    from ..arch.trained import load_trained_model
    from ..engine.exporter import FeatureModel
    from ..utils.config import load_config
    from .legacy import save_legacy
    config = load_config(job["config"])
    feature = FeatureModel(load_trained_model(config), job["task"])
    feature.eval()
    float_dir = os.path.join(job["work_dir"], "float_legacy")
    save_legacy(feature, config["Global"]["image_shape"], os.path.join(float_dir, "inference"))
    images = np.load(job["images"], allow_pickle=False)
    quantize_program(float_dir, images, job["out_dir"], job["algo"], job["batch_size"], job["weight_quantize_type"])


def run_job_file(run, module):
    """A legacy-mode child's entry: ``python -m <module> <job.json>`` runs ``run(job)``."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m {module} <job.json>")
    with open(sys.argv[1]) as f:
        run(json.load(f))


def main():
    run_job_file(run, "ppufo.slim.ptq_job")


if __name__ == "__main__":
    main()
