// etcdctl built from the Go module proxy for atrest's tests (scripts/setup/10-etcd.sh).
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() {
	ctlv3.MustStart()
}
