"""``fmbench-k8s run``: the whole benchmark on one machine - simulators, Locust, Prometheus, analysis."""
