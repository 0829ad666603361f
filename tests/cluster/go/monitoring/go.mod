// The Prometheus Operator's CRDs (example/prometheus-operator-crd/), not built: the cluster tests
// install the real ScrapeConfig schema that the operator's ScrapeConfigs must pass.
module fmbench-k8s/tests/cluster/monitoring

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.86.1
