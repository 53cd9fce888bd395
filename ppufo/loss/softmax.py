"""Cross entropy on the head's logits; with a margin head this is CosFace / ArcFace."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..utils.config import Field, check_args
from .registry import LOSSES


@LOSSES.register
@check_args(epsilon=Field(float, min=0, below=1))
class CELoss(nn.Layer):
    """mean_i -sum_c q_ic log softmax(logits_i)_c with q = (1 - eps) onehot + eps / C."""

    def __init__(self, epsilon=0.0):
        super().__init__()
        self.epsilon = float(epsilon)

    def forward(self, out, label):
        logits = out["logits"].astype("float32")
        logp = F.log_softmax(logits, axis=-1)
        label = label.reshape([-1]).astype("int64")
        nll = -paddle.take_along_axis(logp, label.unsqueeze(1), axis=1).squeeze(1)
        if self.epsilon == 0:
            return nll.mean()
        return ((1 - self.epsilon) * nll - self.epsilon * logp.mean(axis=-1)).mean()
