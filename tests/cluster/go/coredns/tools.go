//go:build tools

// Package tools pins CoreDNS, the cluster DNS server of the real node (build.sh compiles it).
package tools

import (
	_ "github.com/coredns/coredns"
)
