// The pod sandbox ("pause") program of the real node: no dependencies.
module fmbench-k8s/tests/cluster/pause

go 1.26.0
