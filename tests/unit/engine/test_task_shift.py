import numpy as np
import paddle

from ppufo.arch import build_model
from ppufo.engine.precise_bn import backbone_bns, heterogeneous_loader, task_statistics_shift


def test_task_shift_is_the_channel_mean_of_the_standardised_mean_difference(make_config):
    cfg = make_config("Arch.Backbone={name: PaddleClasBackbone, model: ResNet18, img_size: [32, 32]}")
    model = build_model(cfg, {"face": 40, "person": 24, "vehicle": 24, "product": 30})
    model.eval()
    name, bn = backbone_bns(model)[3]
    seen = []
    h = bn.register_forward_pre_hook(lambda layer, inputs: seen.append(inputs[0].numpy()))
    loader = heterogeneous_loader(cfg, 2, seed=0)
    with paddle.no_grad():
        for batch in loader:
            model.backbone(batch[0])
    h.remove()
    shift = task_statistics_shift(model, cfg, 2, seed=0)
    x = np.concatenate(seen)  # 2 batches of face 8, person 8, vehicle 8, product 8
    mix_mean, mix_std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    for i, task in enumerate(["face", "person", "vehicle", "product"]):
        part = np.concatenate([b[8 * i:8 * i + 8] for b in seen])
        want = np.mean(np.abs(part.mean(axis=(0, 2, 3)) - mix_mean) / mix_std)
        assert abs(shift[name][task] - want) < 1e-4 * max(1.0, want)
    assert len(shift) == len(backbone_bns(model)) and not model.training
    assert task_statistics_shift(build_model(make_config(), {"face": 40, "person": 24, "vehicle": 24,
                                                             "product": 30}), make_config(), 1) == {}
