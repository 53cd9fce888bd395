"""Run a study's runs as worker processes, ``parallel`` at a time, resuming where it stopped.

Study folder::

    <study>/runs/<arm>/seed_<s>/   one run: spec.json, worker.log (the process's stdout/stderr),
                                   train.log, config.yaml, checkpoints, eval_*.json, result.json
    <study>/data/seed_<s>/         the seed's demo data when the config generates it
    <study>/ablate.log             the progress lines
    <study>/table.md, table.json, plot.png

Resume: a run with result.json is never run again (a finished run of another identity than the
experiment now plans is an error, not silently mixed in); a run folder without it is an
interrupted run and is deleted and run again from scratch, unless a live worker still holds it.
One study is run by one process at a time (<study>/.ablate.lock). Runs start in plan order (seed
by seed); a run waits for every run it starts from (sources.py). With N runs at a time each gets
Global.cpu_threads = max(1, cores // N) (and the same OMP/MKL/OpenBLAS thread counts, where the
environment does not set them). A failed run stops the study: nothing new starts, the runs
already going finish, and the study exits with the run's exit code, the tail of its log and the
runs that needed it (not run).
SIGINT / SIGTERM / SIGHUP stop every worker it started and exit; rerun to resume.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

from ..utils.errors import ConfigError
from .experiment import run_spec
from .sources import waiting_on
from .report import metrics_found, select_cells
from .results import RESULT, read_result, write_json_atomic
from .worker import SPEC, running_pid

try:
    import fcntl
except ImportError:  # Windows: no study lock
    fcntl = None

POLL_SECONDS = 0.2
TAIL_LINES = 40
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class RunFailed(RuntimeError):
    """A worker exited non-zero (or without a result); ``code`` is the study's exit status."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class Interrupted(RuntimeError):
    def __init__(self, signum):
        super().__init__(f"stopped by signal {signal.Signals(signum).name}")
        self.code = 128 + signum


def default_worker_cmd(spec_path):
    return [sys.executable, "-m", "ppufo.ablation.worker", spec_path]


def format_duration(seconds):
    seconds = int(round(max(seconds, 0)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def tail(path, n=TAIL_LINES):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def cpu_threads_per_run(parallel, cores=None):
    if cores is None:
        from ..utils.device import usable_cores
        cores = usable_cores()
    return max(1, cores // parallel)


def worker_env(cpu_threads, parallel):
    """The environment of a worker: this one, with the checkout of the ppufo package being run
    first on PYTHONPATH (the worker runs the same code as the study, whatever else is installed;
    an installed package is found anyway) and, for parallel runs, the math libraries' thread
    counts at the run's share of the cores unless already set."""
    import ppufo
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(ppufo.__file__)))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if os.path.basename(root) not in ("site-packages", "dist-packages"):  # a source checkout
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if os.path.abspath(p) != root])
    if parallel > 1:
        for k in THREAD_VARS:
            env.setdefault(k, str(cpu_threads))
    return env


class Study:
    def __init__(self, exp, runs, study_dir, parallel, worker_cmd=None, stream=None, cores=None):
        self.exp, self.runs, self.dir = exp, runs, os.path.abspath(study_dir)
        self.parallel = int(parallel)
        if self.parallel < 1:
            raise ConfigError(f"--parallel {parallel}: expected at least 1")
        self.cpu_threads = cpu_threads_per_run(self.parallel, cores)
        self.worker_cmd = worker_cmd or default_worker_cmd
        self.stream = stream or sys.stderr
        self.durations = {}  # kind -> [seconds] of runs finished in this session
        self.done = {}       # run index -> result

    # ----------------------------------------------------------------- output
    def say(self, msg):
        line = f"[{time.strftime('%Y/%m/%d %H:%M:%S')}] ablate: {msg}"
        print(line, file=self.stream, flush=True)
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "ablate.log"), "a") as f:
            f.write(line + "\n")

    def score_text(self, run, result):
        try:
            cells = select_cells(self.exp, result["scores"], sets=run.sets)
        except ConfigError:
            return "scores: " + ", ".join(sorted(result["scores"]))
        return ", ".join(f"{s}/{m} {result['scores'][s][m]:.4f}" for s, m in cells)

    # ----------------------------------------------------------------- state
    def check_finished(self):
        """{index: result} of the finished runs; a finished run of another identity is an error."""
        for r in self.runs:
            res = read_result(r.run_dir)
            if res is None:
                continue
            if res.get("identity") != r.identity:
                raise ConfigError(
                    f"{r.run_dir}: finished with another configuration than the experiment now plans "
                    f"(identity {res.get('identity')} vs {r.identity}: the base config, overrides, -o "
                    f"or the source arm changed). Report it elsewhere with another --out, or delete "
                    f"that folder to run it again")
            self.done[r.index] = res
        return self.done

    def estimate(self, left_runs, running):
        """ETA of the study: the left runs' expected seconds (the mean wall time of finished runs
        of their kind, else of any kind) spread over the parallel slots."""
        mean = {k: sum(v) / len(v) for k, v in self.durations.items() if v}
        if not mean:  # nothing finished in this session: the finished results' own wall times
            for res in self.done.values():
                mean.setdefault(res["kind"], []).append(res["seconds"]["total"])
            mean = {k: sum(v) / len(v) for k, v in mean.items()}
        if not mean:
            return None
        overall = sum(mean.values()) / len(mean)
        left = sum(mean.get(r.kind, overall) for r in left_runs)
        left += sum(max(mean.get(r.kind, overall) - (time.time() - t0), 0.0) for r, t0 in running)
        return left / self.parallel

    # ----------------------------------------------------------------- runs
    def clean_stale_demo_data(self, run, active_seeds):
        """Demo sets a killed run left half-written in the study's own data folder of its seed
        (not listed in the folder's manifest) are deleted, so ensure_demo_data writes them again;
        only while no run of that seed is going."""
        if run.seed in active_seeds:
            return
        root = os.path.join(self.dir, "data", f"seed_{run.seed}")
        if not os.path.isdir(root):
            return
        from ..demo import sets
        done = sets.written_sets(root)
        for name in sets.WRITERS:
            path = os.path.join(root, name)
            if name not in done and os.path.exists(path):
                self.say(f"{os.path.relpath(path, self.dir)}: half-written demo set of an interrupted run, deleted")
                shutil.rmtree(path)

    def start(self, run, running):
        if os.path.exists(run.run_dir):
            pid = running_pid(run.run_dir)
            if pid:
                raise ConfigError(f"{run.run_dir} is being run by another process (pid {pid}); "
                                  f"wait for it or stop it, then run the study again")
            self.say(f"[{run.index}/{len(self.runs)}] {run.name}: deleting the interrupted run in {run.rel_dir}")
            shutil.rmtree(run.run_dir)
        self.clean_stale_demo_data(run, {r.seed for r in running})
        os.makedirs(run.run_dir)
        spec_path = os.path.join(run.run_dir, SPEC)
        write_json_atomic(spec_path, run_spec(run, run.sets, self.cpu_threads))
        log = open(os.path.join(run.run_dir, "worker.log"), "w")
        proc = subprocess.Popen(self.worker_cmd(spec_path), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=worker_env(self.cpu_threads, self.parallel),
                                start_new_session=True)  # its own process group: stopped as one
        self.say(f"[{run.index}/{len(self.runs)}] {run.name} started ({run.rel_dir}, "
                 f"{self.cpu_threads} CPU thread(s))")
        return proc, log

    def stop(self, running):
        """SIGTERM every running worker's process group, SIGKILL what is left after 10 s."""
        for _, (proc, _log, _t0) in running.items():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for _, (proc, log, _t0) in running.items():
            try:
                proc.wait(max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            log.close()

    def execute(self):
        """Run every unfinished run; returns {index: result} of all finished runs."""
        self.check_finished()
        todo = [r for r in self.runs if r.index not in self.done]
        if not todo:
            self.say(f"all {len(self.runs)} runs finished; nothing to run")
            return self.done
        for r in todo:  # before anything starts: an orphaned worker of a killed study
            pid = running_pid(r.run_dir) if os.path.isdir(r.run_dir) else None
            if pid:
                raise ConfigError(f"{r.run_dir} is being run by another process (pid {pid}); "
                                  f"wait for it or stop it, then run the study again")
        self.say(f"study {self.exp.name} in {self.dir}: {len(self.runs)} runs "
                 f"({len(self.exp.arms)} arms x {len(self.exp.seeds)} seeds), {len(self.done)} already "
                 f"finished, {len(todo)} to run, {self.parallel} at a time")
        running, failure, said_wait = {}, None, False  # running: run -> (Popen, log file, start time)
        handlers = self._trap_signals()
        lock = self._lock()
        try:
            while todo or running:
                while failure is None and len(running) < self.parallel:
                    ready = next((r for r in todo if all(n.index in self.done for n in r.needs)), None)
                    if ready is None:
                        break
                    todo.remove(ready)
                    proc, log = self.start(ready, running)
                    running[ready] = (proc, log, time.time())
                if not running:
                    if failure is None:  # nothing runs and nothing can start: never wait forever
                        failure = RunFailed("runs wait for runs that are neither finished nor planned: " + ", ".join(
                            f"{r.rel_dir} (needs {[n.rel_dir for n in r.needs if n.index not in self.done]})"
                            for r in todo), 1)
                    break
                time.sleep(POLL_SECONDS)
                for run, (proc, log, t0) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del running[run]
                    log.close()
                    failure = self._finished(run, code, time.time() - t0, todo, running) or failure
                if failure is not None and running and not said_wait:
                    said_wait = True
                    self.say(f"waiting for the {len(running)} running run(s) to finish (Ctrl-C stops them)")
        except BaseException as e:  # Ctrl-C, a signal, or a bug here: no worker outlives the study
            what = f"interrupted ({e or 'Ctrl-C'})" if isinstance(e, (KeyboardInterrupt, Interrupted)) \
                else f"error ({type(e).__name__}: {e})"
            self.say(f"{what}: stopping {len(running)} running run(s); run the same command again to resume")
            self.stop(running)
            raise
        finally:
            self._restore_signals(handlers)
            if lock is not None:
                lock.close()
        if failure is not None:
            raise failure
        return self.done

    def _finished(self, run, code, seconds, todo, running):
        """Record a worker's exit; returns the exception that stops the study, or None."""
        k = f"[{run.index}/{len(self.runs)}] {run.name}"
        result = read_result(run.run_dir) if code == 0 else None
        if result is None:
            status = code if code > 0 else (128 - code if code < 0 else 1)
            why = f"exit code {code}" if code else f"no {RESULT} written"
            log_path = os.path.join(run.run_dir, "worker.log")
            text = tail(log_path)
            blocked = [r.rel_dir for r in waiting_on(run, todo)]
            also = f"; not run, as they need it: {', '.join(blocked)}" if blocked else ""
            self.say(f"{k} FAILED after {format_duration(seconds)} ({why}){also}; last lines of {log_path}:\n{text}")
            return RunFailed(f"{run.rel_dir} failed ({why}){also}; its log: {log_path}\n{text}", status)
        self.done[run.index] = result
        self.durations.setdefault(run.kind, []).append(seconds)
        eta = self.estimate(todo, [(r, t0) for r, (_, _, t0) in running.items()])
        self.say(f"{k} done in {format_duration(seconds)} ({self.score_text(run, result)}); study ETA "
                 f"{'unknown' if eta is None else format_duration(eta)}, runs left {len(todo) + len(running)}")
        try:  # the sets its config holds; the metrics once the finished runs cover every set
            select_cells(self.exp, result["scores"], where=run.rel_dir, sets=run.sets)
            metrics_found(self.exp, [r["scores"] for r in self.done.values()])
        except ConfigError as e:  # caught after the first run(s), not after the whole study
            return e
        return None

    def _lock(self):
        """Hold <study>/.ablate.lock while running: a second process on the same study is refused."""
        if fcntl is None:
            return None
        os.makedirs(self.dir, exist_ok=True)
        fh = open(os.path.join(self.dir, ".ablate.lock"), "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ConfigError(f"{self.dir}: another ppufo-ablate is running this study; wait for it "
                              f"to finish, or use another --out") from None
        return fh

    def _trap_signals(self):
        def handler(signum, frame):
            raise Interrupted(signum)
        old = {}
        try:
            for s in (signal.SIGTERM, signal.SIGHUP):
                old[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return old

    def _restore_signals(self, old):
        for s, h in old.items():
            signal.signal(s, h)
