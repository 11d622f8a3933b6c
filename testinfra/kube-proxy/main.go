// Command kube-proxy is the upstream service proxy (iptables mode), built from the
// k8s.io/kubernetes module for the test cluster's node, so Services get ClusterIPs
// that route inside the node's network namespace. Test infrastructure, never product
// code.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
