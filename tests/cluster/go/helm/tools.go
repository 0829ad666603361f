//go:build tools

// Package tools pins the Helm CLI that docs/install.md's commands use (build.sh compiles it).
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
