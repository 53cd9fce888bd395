"""Progress of long loops: a tqdm bar on a terminal; in a log file, a pipe or CI (where tqdm
stays silent) a log line at most every ``every`` seconds with done/total, elapsed and ETA."""
import sys
import time

from tqdm import tqdm

from .logger import get_logger


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total, desc, every=15.0, tty=None, log=None, clock=time.time):
        self.total, self.desc, self.every, self.clock = int(total), desc, float(every), clock
        self.done, self.t0 = 0, clock()
        self.last = self.t0
        tty = sys.stderr.isatty() if tty is None else tty
        self.bar = tqdm(total=self.total, desc=desc) if tty and self.total else None
        self.log = log or get_logger()
        if self.bar is None and self.total:
            self.log.info(f"{desc}: 0/{self.total} ...")

    def line(self):
        """``desc: done/total, elapsed h:mm:ss, ETA h:mm:ss`` (ETA from the mean time per step so far)."""
        elapsed = self.clock() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        return f"{self.desc}: {self.done}/{self.total}, elapsed {format_eta(elapsed)}, eta {format_eta(eta)}"

    def update(self, n=1):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.done >= self.total or self.clock() - self.last >= self.every:
            self.last = self.clock()
            self.log.info(self.line())

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
