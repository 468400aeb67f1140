//go:build tools

// The real Kubernetes components the end-to-end tests run. Importing their
// main packages here pins them in go.mod; scripts/ensure-kube.sh builds them.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
