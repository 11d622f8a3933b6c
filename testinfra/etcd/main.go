// Command etcd is upstream etcd's server entry point, wrapped in a module of
// our own because etcd's root module cannot be built with `go install`.
// It is test infrastructure, never product code.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
