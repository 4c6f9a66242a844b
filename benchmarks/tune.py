"""The same ASHA search with yrmpi's sweep and with Ray Tune, on this machine, in one run.

    python -m benchmarks.tune [--quick] [--no-ray]

Search space: ``lr`` log-uniform in [1e-4, 1]; budget: 24 random draws, ``max_t`` 16 epochs,
ASHA with grace period 1 and reduction factor 3, 2 experiments at once (2 cores); toy
objective with a known optimum: ``loss(lr, epoch) = (log10(lr) + 1.5)**2 + 1 / epoch``
(best at lr = 10**-1.5, loss 1/16 after 16 epochs), each epoch sleeping EPOCH_S.

Measured for both, from the journal (yrmpi) or the results (Ray): the wall time from the first
experiment's start to the end of the experiment that turned out best, and the experiment-
seconds used (the sum of every experiment's wall time, stopped ones included: yrmpi's from
the journal's ``wall``, which includes creating the supervisor; Ray's ``time_total_s``, which
counts only the trainable's own time, and whole-second ``timestamp`` s for the time to best).  Ratios are
yrmpi / Ray (< 1: yrmpi used less).  The draws differ (each tool's own random stream), so the
ratios compare how each runs the same policy, not the luck of the draws; Ray Tune is the
``bench`` extra and is skipped with a note when it is not installed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks import common

SAMPLES = 24
MAX_T = 16
GRACE = 1
RF = 3
CONCURRENT = 2
EPOCH_S = 0.05
LOW, HIGH = 1e-4, 1.0


def objective(lr: float, epoch: int) -> float:
    return (math.log10(lr) + 1.5) ** 2 + 1.0 / epoch


class Toy:
    """The sweep's supervisor: one epoch = EPOCH_S of sleep, a report per epoch."""

    def fit(self, params, trial):
        for epoch in range(1, params["epochs"] + 1):
            time.sleep(EPOCH_S)
            trial.report({"loss": objective(params["lr"], epoch)}, step=epoch)
        return {"loss": objective(params["lr"], params["epochs"])}


def run_yrmpi(samples: int, workdir: Path) -> dict:
    doc = {
        "name": "tune-bench", "entry": f"{Path(__file__).resolve()}:Toy", "run": "fit",
        "resources": {"supervisor": {"cpu": 1000, "memory": 200}},
        "params": {"lr": {"loguniform": [LOW, HIGH]}, "epochs": MAX_T}, "samples": samples,
        "metric": {"name": "loss", "mode": "min"},
        "scheduler": {"type": "asha", "max_t": MAX_T, "grace_period": GRACE, "reduction_factor": RF},
        "max_concurrent": CONCURRENT, "status_interval": 60, "output": str(workdir / "out"),
    }
    path = workdir / "tune.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    _, process_s = common.run_child([common.PYTHON, "-m", "yrmpi", "sweep", str(path), "--fresh"])
    from yrmpi.sweep import read_journal

    records, _ = read_journal(workdir / "out")
    summary = json.loads((workdir / "out" / "summary.json").read_text())
    best = summary["best"]
    first = min(r["ts"] for r in records if r["event"] == "started")
    end = next(r["ts"] for r in records if r["event"] in ("finished", "stopped") and r["exp"] == best["id"])
    walls = [r["wall"] for r in records if r["event"] in ("finished", "stopped")]
    return {"time_to_best_s": end - first, "experiment_s": sum(walls), "best_loss": best["metrics"]["loss"],
            "best_lr": best["params"]["lr"], "stopped": summary["counts"]["stopped"], "process_s": process_s}


def run_ray(samples: int) -> dict:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    def trainable(config):
        for epoch in range(1, MAX_T + 1):
            time.sleep(EPOCH_S)
            tune.report({"loss": objective(config["lr"], epoch), "epoch": epoch})

    ray.init(num_cpus=CONCURRENT, include_dashboard=False, log_to_driver=False)
    try:
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=MAX_T, grace_period=GRACE,
                                  reduction_factor=RF)
        run_config = getattr(tune, "RunConfig", None)
        if run_config is None:
            from ray.train import RunConfig as run_config
        tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                           param_space={"lr": tune.loguniform(LOW, HIGH)},
                           run_config=run_config(verbose=0),
                           tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=scheduler,
                                                       num_samples=samples, max_concurrent_trials=CONCURRENT))
        results = tuner.fit()
        frames = [r.metrics for r in results]
        best = results.get_best_result(metric="loss", mode="min", scope="last")
        starts = [m["timestamp"] - m["time_total_s"] for m in frames]
        return {"time_to_best_s": best.metrics["timestamp"] - min(starts),
                "experiment_s": sum(m["time_total_s"] for m in frames), "best_loss": best.metrics["loss"],
                "best_lr": best.config["lr"], "stopped": sum(1 for m in frames if m["training_iteration"] < MAX_T)}
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8 draws instead of 24")
    p.add_argument("--no-ray", action="store_true")
    ns = p.parse_args(argv)
    samples = 8 if ns.quick else SAMPLES
    out: dict = {"samples": samples, "max_t": MAX_T, "epoch_s": EPOCH_S, "concurrent": CONCURRENT}
    with tempfile.TemporaryDirectory() as tmp:
        out["yrmpi"] = run_yrmpi(samples, Path(tmp))
    if ns.no_ray or not common.ray_available():
        out["ray"] = None
        out["note"] = "Ray Tune not run: " + ("--no-ray" if ns.no_ray else "not installed (pip install 'yrmpi[bench]')")
    else:
        out["ray"] = run_ray(samples)
        out["ratio_time_to_best"] = out["yrmpi"]["time_to_best_s"] / out["ray"]["time_to_best_s"]
        out["ratio_experiment_s"] = out["yrmpi"]["experiment_s"] / out["ray"]["experiment_s"]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
