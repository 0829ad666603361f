"""The kopf operator: thin handlers over a pure reconcile state machine and pure child builders.

Never imports ``fmbench_k8s.loadgen``: Locust's gevent patching must own its process.
"""
