"""The parts of Ray that yrmpi.ray leaves out, each with what to use instead (docs/ray.md)."""

OUT_OF_SCOPE = {
    "data": "Ray Data is out of scope in yrmpi.ray: read your shards inside the tasks (or yrmpi.torch.sampler)",
    "serve": "Ray Serve is out of scope in yrmpi.ray: a batch job has no HTTP ingress; serve models elsewhere",
    "train": "Ray Train is out of scope in yrmpi.ray: use a supervisor actor with worker actors and "
             "yr.collective or yrmpi.torch (docs/torch.md)",
    "tune": "Ray Tune is out of scope in yrmpi.ray: use yrmpi's sweeps (yrmpi sweep, docs/sweeps.md)",
    "workflow": "Ray Workflows are out of scope in yrmpi.ray: use yrmpi's sweeps, whose journal survives restarts",
    "job_submission": "the job submission API is out of scope in yrmpi.ray: submit with sbatch/srun "
                      "(yrmpi slurm, docs/slurm.md)",
    "dashboard": "the dashboard is out of scope in yrmpi.ray: use ray.nodes(), ray.available_resources() and "
                 "the job's output",
    "timeline": "ray.timeline is out of scope in yrmpi.ray: use logging.getLogger('yrmpi') at DEBUG",
    "get_dashboard_url": "the dashboard is out of scope in yrmpi.ray",
    "autoscaler": "the autoscaler is out of scope in yrmpi.ray: the job's size is its allocation",
    "rllib": "RLlib is out of scope in yrmpi.ray",
    "client": "Ray Client is out of scope in yrmpi.ray: run the driver inside the job",
    "ObjectRefGenerator": "generator tasks are out of scope in yrmpi.ray: return a list",
    "DynamicObjectRefGenerator": "generator tasks are out of scope in yrmpi.ray: return a list",
}
