"""Training FLOPs, counted per forward pass: the backbone's forward FLOPs of each task's images on
the path they take (a supernet: the task's active subnet), times TRAIN_FACTOR for the backward.

A sandwich step counts each of its passes. Counted: the matmuls and the patch convolution of the
backbone (vit_flops); the necks and classifiers (under 0.1% of a ViT-Tiny's at 64x64) are not.
"""
from ..utils.errors import ConfigError

# forward + backward: the backward computes the gradients of the activations and of the weights,
# each about one forward's matmul work
TRAIN_FACTOR = 3


def forward_flops(model, task):
    """Forward FLOPs per image of ``task``'s path through the backbone; None for a backbone that
    does not count them (PaddleClas CNNs)."""
    space = getattr(model, "space", None)
    if space is not None:
        return space.flops(model.subnets[task])
    count = getattr(model.backbone, "forward_flops", None)
    return count() if count is not None else None


def pass_flops(model, sizes):
    """Training FLOPs of one forward + backward pass over a batch of ``sizes`` ([(task, images)]);
    None when the backbone does not count them."""
    total = 0
    for task, n in sizes:
        if n:
            f = forward_flops(model, task)
            if f is None:
                return None
            total += n * f
    return TRAIN_FACTOR * total


def planned_step_flops(config):
    """Training FLOPs of one step of ``config``, before training: every task's batch through the
    model built from it (no weights). Only for a plain model under the HeterogeneousBatchSampler,
    where every step holds every task's batch."""
    from ..arch import build_model, is_supernet
    sampler = config["DataLoader"]["Train"]["batch_sampler"]["name"]
    if sampler != "HeterogeneousBatchSampler":
        raise ConfigError(f"compute_of: DataLoader.Train.batch_sampler.name is {sampler}; the steps are "
                          f"planned for HeterogeneousBatchSampler (every step holds every task's batch)")
    if is_supernet(config):
        raise ConfigError("compute_of: a supernet's FLOPs per step depend on the subnets it draws; "
                          "give compute_of to a plain model's arm")
    flops = pass_flops(build_model(config), [(t, c["batch_size"]) for t, c in config["Tasks"].items()])
    if flops is None:
        raise ConfigError(f"compute_of: Arch.Backbone {config['Arch']['Backbone'].get('name')} does not "
                          f"count its FLOPs (a ViT does)")
    return flops
