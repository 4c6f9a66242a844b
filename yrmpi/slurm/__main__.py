"""`python -m yrmpi.slurm job.py [args]` (slurm/job.sbatch): see job.job_main."""

import sys

from .job import job_main

sys.exit(job_main(sys.argv[1:]))
