"""SIGINT (Ctrl-C) and SIGTERM during training: finish the step, save, stop (Trainer.train).

The first signal asks the loop to stop after the step in progress; the trainer then saves a
complete ``latest`` checkpoint (rank 0) and raises TrainingInterrupted, which the train tool turns
into the resume command and exit status 128 + signal. A second signal at least REPEAT_WINDOW s
after the first kills the process at once (the checkpoint save is atomic: an interrupted save
leaves the previous checkpoint). A repeat inside the window is the same request:
paddle.distributed.launch resends SIGTERM every 0.2 s while a trainer is alive.

Under a launch every rank must stop after the same step (a rank that stopped alone would leave
the others waiting in the next gradient all-reduce), so the ranks agree with an all-reduce of
their flags: after every step on the CPU, where the step has already run; on a GPU only at the
log_interval steps, where the trainer reads the losses anyway, so no step waits for the device
(the run then stops at the next log_interval step).
"""
import os
import signal
import time

from ..utils.logger import get_logger

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_WINDOW = 1.0


class TrainingInterrupted(BaseException):
    """Training stopped on a signal after ``iteration``; ``checkpoint`` is the prefix saved (on
    rank 0; None elsewhere). A BaseException, like KeyboardInterrupt: ``except Exception``
    handlers let it through. ``code``: the exit status, 128 + the signal number."""

    def __init__(self, signum, iteration, checkpoint):
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        self.code = 128 + signum
        saved = f"checkpoint {checkpoint} saved" if checkpoint else "rank 0 saved the checkpoint"
        super().__init__(f"training stopped by {signal.Signals(signum).name} after iteration {iteration}; {saved}")


class StopRequest:
    """Context manager trapping SIGINT and SIGTERM for the training loop (main thread only;
    elsewhere signals keep their handlers). ``signum``: the first signal received, or None."""

    def __init__(self):
        self.signum, self.first, self.old = None, None, {}

    def __enter__(self):
        try:
            for s in SIGNALS:
                self.old[s] = signal.signal(s, self.handle)
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        self.old = {}

    def handle(self, signum, frame):
        now = time.monotonic()
        if self.signum is None:
            self.signum, self.first = signum, now
            get_logger().warning(f"{signal.Signals(signum).name}: finishing the current step, then saving a "
                                 f"checkpoint and stopping; send it again a second or more later to stop at once without saving")
        elif now - self.first >= REPEAT_WINDOW:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def agreed(self, world_size, due):
        """Whether every rank stops after this step. Single process: this process's request.
        Under a launch: the ranks' requests all-reduced (MAX), at ``due`` steps only (the same on
        every rank), else False."""
        local = self.signum is not None
        if world_size == 1:
            return local
        if not due:
            return False
        import paddle
        import paddle.distributed as dist
        flag = paddle.to_tensor([int(local)], dtype="int32")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.signum is None:
            self.signum = signal.SIGTERM  # another rank's request: stopped as if terminated
        return bool(flag.item())
