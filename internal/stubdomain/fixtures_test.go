package stubdomain

import "os"

// kubeadmCorefile is the Corefile kubeadm writes into kube-system/coredns, shared with the
// end-to-end tests in test/.
var kubeadmCorefile = mustRead("testdata/kubeadm.Corefile")

// aksCorefile is the shape of AKS's Corefile: it imports coredns-custom's *.server keys, and
// files that live only in the CoreDNS pod.
var aksCorefile = mustRead("testdata/aks.Corefile")

func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}
