// etcd server built from the Go module proxy for atrest's tests (scripts/setup/10-etcd.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
