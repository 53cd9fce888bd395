"""Ablation studies of the UFO article's claims (ppufo-ablate; tools/ablate.py).

An experiment file (experiment.py) names a base config, arms as override sets, seeds, and the
test sets, metrics and arm pairs compared. runner.py runs every (arm, seed) as its own worker
process (worker.py: train, score the final iteration once; or a derived arm's post-step on a
trained arm's checkpoint: precise BN, or a subnet search, search_arm.py), resumably and optionally
in parallel, each run after the runs it starts from (sources.py); results.py is a run's result
file. report.py turns the finished runs into table.md / table.json / plot.png with the statistics of stats.py (means
with 95% t-intervals, paired per-seed differences and a verdict on the claimed direction).

Layer: above nas (it drives engine, demo and arch through the worker), below cli.
"""
