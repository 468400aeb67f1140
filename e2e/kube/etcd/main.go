// etcd for the test cluster, built from the pinned go.etcd.io/etcd/server
// module: the upstream binary's main is this one call.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
