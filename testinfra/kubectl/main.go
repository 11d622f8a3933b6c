// Command kubectl is upstream kubectl (k8s.io/kubectl), built for the test
// suite's reference commands: `kubectl create secret --dry-run=client` and
// `kubectl apply --server-side`. Test infrastructure, never product code.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
