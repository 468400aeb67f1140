//go:build tools

// The official Gateway API conformance suite v1.7.0, pinned here beside the
// v1.6.1 one (../conformance-suite) so that both can be built from go.mod and
// go.sum. Only the conformance package is imported: its TestConformance is
// compiled with go test -c.
//
// v1.7.0 needs Go 1.27: every go command in this folder runs with
// GOTOOLCHAIN=go1.27.3, which the go command takes from the module proxy.
//
// Since v1.7.0 the suite's backends (echo-basic's gRPC, TCP and UDP
// servers) live in the module sigs.k8s.io/gateway-api-conformance-images,
// which the module proxy does not serve. go.mod replaces it with
// sigs.k8s.io/gateway-api/conformance v1.6.1, whose echo-basic packages are
// the ones that module was split from (same package names and directory
// layout). The echo-basic program itself is built by ../conformance-suite
// (v1.6.1): it serves the suite's conformance/echo-basic:v0.1.0 and v0.2.0
// images. v1.7.0 deploys no CoreDNS: its UDP backend is echo-basic in UDP
// mode.
//
// sigs.k8s.io/gateway-api is required at the conformance module's own
// version: that module names it at a placeholder version, replaced by its
// parent directory upstream, and a replace does not apply to a dependency.
package conformancesuite

import (
	_ "sigs.k8s.io/gateway-api/conformance"
)
