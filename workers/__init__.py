"""arq worker: notices, billing and cost jobs, and the cron sweeps that make sure nothing is left behind."""
