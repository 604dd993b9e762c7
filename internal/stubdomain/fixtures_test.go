package stubdomain

import "os"

// kubeadmCorefile is the Corefile kubeadm writes into kube-system/coredns, shared with the
// end-to-end tests in test/.
var kubeadmCorefile = mustRead("testdata/kubeadm.Corefile")

func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}
