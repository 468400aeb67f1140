// The CoreDNS server behind the conformance suite's coredns/coredns:v1.12.2
// image: the UDP backend of the UDPRoute test, deployed by the suite's base
// manifests, whose Pods must all be Ready before any profile runs. CoreDNS chooses its plugins at compile
// time; this build has the ones the suite's Corefile names (forward, log,
// errors, whoami) and takes the same flags as the image (-conf FILE).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func main() {
	coremain.Run()
}
