"""SIGINT / SIGTERM during training: the step in progress finishes, a complete checkpoint is saved,
TrainingInterrupted carries the exit status; a repeat within a second is the same request, a
later one kills the process at once."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ppufo.engine.hooks import Hook
from ppufo.engine.interrupt import TrainingInterrupted
from ppufo.engine.trainer import Trainer
from ppufo.utils.checkpoint import load_checkpoint, read_states

from helpers import losses_of


class SignalAt(Hook):
    """Sends ``signum`` to this process ``times`` times after step ``at``; records the steps."""

    def __init__(self, at, signum, times=1):
        self.at, self.signum, self.times, self.steps = at, signum, times, []

    def after_step(self, iteration, stats, batch_images):
        self.steps.append(iteration)
        if iteration == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum, times", [(signal.SIGINT, 1), (signal.SIGTERM, 3)])
def test_a_signal_stops_after_the_step_with_a_resumable_checkpoint(make_config, tmp_path, signum, times):
    """SIGTERM three times in a row, as paddle.distributed.launch sends it, is one request."""
    before = signal.getsignal(signum)
    trainer = Trainer(make_config("Global.max_iters=6", output_dir=tmp_path / "out"))
    hook = SignalAt(3, signum, times)
    trainer.register_hooks([hook])
    with pytest.raises(TrainingInterrupted) as e:
        trainer.train()
    assert hook.steps == [1, 2, 3]  # the step in progress finished, no later one started
    assert (e.value.iteration, e.value.checkpoint, e.value.code) == (3, str(tmp_path / "out" / "latest"), 128 + signum)
    assert f"stopped by {signal.Signals(signum).name} after iteration 3" in str(e.value)
    assert signal.getsignal(signum) is before  # the handlers are the caller's again
    assert read_states(str(tmp_path / "out" / "latest"))["iteration"] == 3
    # the checkpoint is whole: model, optimizer and schedule of step 3, as a plain save would have them
    resumed = Trainer(make_config("Global.max_iters=6", f"Global.checkpoints={tmp_path / 'out' / 'latest'}",
                                  output_dir=tmp_path / "out"))
    assert resumed.start_iter == 3 and abs(resumed.lr.last_lr - trainer.lr.last_lr) < 1e-12
    fresh = Trainer(make_config("Global.max_iters=6", output_dir=tmp_path / "fresh"))
    losses_of(fresh, 3)
    load_checkpoint(str(tmp_path / "out" / "latest"), fresh.model)  # loads strictly: same keys and shapes
    assert resumed.train() == 6


def test_a_signal_after_the_last_step_ends_the_run_normally(make_config, tmp_path):
    trainer = Trainer(make_config("Global.max_iters=3", output_dir=tmp_path / "out"))
    trainer.register_hooks([SignalAt(3, signal.SIGINT)])
    assert trainer.train() == 3
    assert read_states(str(tmp_path / "out" / "latest"))["iteration"] == 3


def test_a_second_signal_a_second_later_kills_at_once(tmp_path):
    """A real process: two SIGINTs within the window leave it running with one request; one more
    after the window ends it by the signal itself (no Python exception, nothing more runs)."""
    code = textwrap.dedent("""
        import os, signal, time
        from ppufo.engine.interrupt import StopRequest
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            print("requested", stop.signum == signal.SIGINT, flush=True)
            time.sleep(1.2)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            print("still running", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert "requested True" in lines, proc.stdout + proc.stderr
    assert sum("SIGINT: finishing the current step" in line for line in lines) == 1  # the repeat said nothing
    assert proc.returncode == -signal.SIGINT and "still running" not in proc.stdout, proc.stderr
