// Karpenter's CRDs (pkg/apis/crds/: NodePool, EC2NodeClass), not built: the chart tests install
// the real schemas, with their CEL rules, that the chart's NodePools must pass.
module fmbench-k8s/tests/cluster/karpenter

go 1.26.0

require github.com/aws/karpenter-provider-aws v1.14.0
