import logging

from ppufo.utils.progress import Progress, format_eta


def test_progress_outside_a_terminal_logs_done_total_and_eta_at_most_every_interval():
    now = [0.0]
    lines = []
    log = logging.getLogger("test_progress")
    log.info = lines.append
    p = Progress(4, "latency", every=10, tty=False, log=log, clock=lambda: now[0])
    for t in (2.0, 4.0, 12.0, 13.0):  # the third step is 10 s after the last line; the fourth ends it
        now[0] = t
        p.update()
    assert lines == ["latency: 0/4 ...", "latency: 3/4, elapsed 0:00:12, eta 0:00:04",
                     "latency: 4/4, elapsed 0:00:13, eta 0:00:00"]


def test_format_eta():
    assert [format_eta(s) for s in (0, 59.9, 61, 3725, -3)] == ["0:00:00", "0:00:59", "0:01:01", "1:02:05", "0:00:00"]
