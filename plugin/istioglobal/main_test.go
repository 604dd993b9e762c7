package istioglobal

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// Istio's fake clientset cannot stream the initial list (WatchList), and its generated
	// informers give client-go no way to find out, so unit tests use list+watch. The
	// end-to-end tests run the default against a real API server.
	os.Setenv("KUBE_FEATURE_WatchListClient", "false")
	os.Exit(m.Run())
}
