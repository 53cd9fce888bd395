"""The int8 latency probes of a chip's table (latency_probes.export_int8_probes), built in their own
legacy-mode process: ``python -m ppufo.nas.int8_probes <job.json>``, started through
slim.quantize.run_job.

Each probe (latency_probes.probe_layers, seeded as in the parent) is traced as a legacy program
(slim.legacy.save_legacy) and quantised as ppufo-quantize quantises a task model
(slim.ptq_job.quantize_program), on random calibration images; its folder gets an inference.yml
saying int8 (slim.quantize.int8_info), which the int8 chip's predictor requires.

job.json keys: config (the supernet config, dumped), task, copies, dirs (one output folder per
probe: the stem, then latency_probes.probe_entries), work_dir, int8_ops, images (how many), algo, seed.
"""
import os

import numpy as np


def run(job):
    import yaml
    from tqdm import tqdm

    from ..slim.legacy import save_legacy
    from ..slim.ptq_job import QUANTIZABLE_OPS, quantize_program
    from ..slim.quantize import WEIGHT_QUANTIZE, int8_info
    from ..utils.config import load_config
    from .latency_probes import probe_layers, supernet_space
    config = load_config(job["config"])
    shape = list(config["Global"]["image_shape"])
    images = np.random.RandomState(job["seed"]).standard_normal([job["images"], *shape]).astype(np.float32)
    space = supernet_space(config)
    probes = probe_layers(config, space, job["task"], job["copies"])
    floats = [os.path.join(job["work_dir"], f"float_{i}") for i in range(len(job["dirs"]))]
    # every probe traced first, then every one quantised: PostTrainingQuantization switches paddle
    # to static mode, and a probe traced after switching back fails (its neck's projection is lost)
    for probe, float_dir in zip(probes, tqdm(floats, desc="tracing int8 probes")):
        save_legacy(probe, shape, os.path.join(float_dir, "inference"))
    for float_dir, out in zip(tqdm(floats, desc="quantising int8 probes"), job["dirs"]):
        quantize_program(float_dir, images, out, job["algo"], job["images"], WEIGHT_QUANTIZE)
        with open(os.path.join(out, "inference.yml"), "w") as f:
            yaml.safe_dump({"image_shape": shape, **int8_info(job["int8_ops"]),
                            "calibration": {"images": job["images"], "algo": job["algo"], "random": True,
                                            "ops": QUANTIZABLE_OPS}}, f, sort_keys=False)


def main():
    from ..slim.ptq_job import run_job_file
    run_job_file(run, "ppufo.nas.int8_probes")


if __name__ == "__main__":
    main()
