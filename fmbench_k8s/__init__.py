"""fmbench-k8s: Kubernetes-native price/performance benchmarking of LLM serving."""

__version__ = "0.1.0"
