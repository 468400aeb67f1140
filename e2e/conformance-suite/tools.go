//go:build tools

// The official Gateway API conformance suite and its backends, pinned here
// so that scripts/ensure-conformance.sh builds them from go.mod and go.sum:
// the conformance package (its TestConformance is compiled with go test -c;
// its test files import nothing the package does not) and echo-basic, the
// backend of the suite's gateway-api/echo-basic:* images (HTTP, h2c, TLS;
// gRPC, TCP and UDP modes chosen by environment variables).
// The CoreDNS backend is ./coredns.
//
// sigs.k8s.io/gateway-api is required at the conformance module's own
// version: that module names it at a placeholder version, replaced by its
// parent directory upstream, and a replace does not apply to a dependency.
package conformancesuite

import (
	_ "sigs.k8s.io/gateway-api/conformance"
	_ "sigs.k8s.io/gateway-api/conformance/echo-basic"
)
