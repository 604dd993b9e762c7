package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestHarnessSmoke proves the harness without the istioglobal plugin: the API server stores
// ServiceEntries in every version, with status, and the binary serves a stock Corefile.
func TestHarnessSmoke(t *testing.T) {
	createNamespace(t, "foo")
	applyServiceEntryV1alpha3(t, &networkingv1alpha3.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "httpbin-bar", Namespace: "foo"},
		Spec: networking.ServiceEntry{
			Hosts:      []string{"httpbin.bar.global"},
			Addresses:  []string{"127.255.0.2"},
			Ports:      []*networking.ServicePort{{Name: "http1", Number: 8000, Protocol: "http"}},
			Resolution: networking.ServiceEntry_DNS,
			Location:   networking.ServiceEntry_MESH_INTERNAL,
			Endpoints:  []*networking.WorkloadEntry{{Address: "127.0.0.10", Ports: map[string]uint32{"http1": 15443}}},
		},
	})

	ses := istioClient.NetworkingV1().ServiceEntries("foo")
	se, err := ses.Get(apiContext(t), "httpbin-bar", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the v1alpha3 ServiceEntry as v1: %v", err)
	}
	if got := se.Spec.GetHosts(); len(got) != 1 || got[0] != "httpbin.bar.global" {
		t.Errorf("v1 hosts = %v", got)
	}
	if got := se.Spec.GetEndpoints(); len(got) != 1 || got[0].GetAddress() != "127.0.0.10" || got[0].GetPorts()["http1"] != 15443 {
		t.Errorf("v1 endpoints = %v", got)
	}

	setServiceEntryAddresses(t, "foo", "httpbin-bar", &networking.ServiceEntryAddress{Value: "240.240.0.1", Host: "httpbin.bar.global"})
	se, err = ses.Get(apiContext(t), "httpbin-bar", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := se.Status.GetAddresses(); len(got) != 1 || got[0].GetValue() != "240.240.0.1" || got[0].GetHost() != "httpbin.bar.global" {
		t.Errorf("status.addresses = %v", got)
	}
	if len(se.Spec.GetAddresses()) != 1 {
		t.Errorf("UpdateStatus changed spec.addresses: %v", se.Spec.GetAddresses())
	}

	c := startCoreDNS(t, `.:{{.Port}} {
	bind 127.0.0.1
	ready 127.0.0.1:{{.ReadyPort}}
	prometheus 127.0.0.1:{{.MetricsPort}}
	whoami
}`)
	c.waitReady(t, 10*time.Second)
	for _, tcp := range []bool{false, true} {
		r := exchange(t, c.Addr, "httpbin.bar.global", dns.TypeA, tcp)
		if r.Rcode != dns.RcodeSuccess || len(r.Extra) == 0 {
			t.Fatalf("tcp=%v: unexpected whoami response:\n%v", tcp, r)
		}
		if a, ok := r.Extra[0].(*dns.A); !ok || a.A.String() != "127.0.0.1" {
			t.Errorf("tcp=%v: whoami's first extra RR = %v, want the A record 127.0.0.1", tcp, r.Extra[0])
		}
	}
	if r := exchangeEDNS(t, c.Addr, "httpbin.bar.global", dns.TypeA, false, 1232); r.IsEdns0() == nil {
		t.Errorf("no OPT record in the response to an EDNS0 query:\n%v", r)
	}
	out := dig(t, c.Addr, "httpbin.bar.global", "A")
	if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "127.0.0.1") {
		t.Errorf("dig output:\n%s", out)
	}
	if m := c.metrics(t); !strings.Contains(m, "coredns_dns_requests_total") {
		t.Errorf("no coredns_dns_requests_total in the metrics:\n%s", m)
	}

	t.Run("identities", func(t *testing.T) {
		// RBAC is on: a user without bindings is authenticated but may not list.
		cfg, err := clientcmd.BuildConfigFromFlags("", userKubeconfig(t, "nobody"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = kubernetes.NewForConfigOrDie(cfg).CoreV1().Services("foo").List(apiContext(t), metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("listing as an unbound user: err = %v, want Forbidden", err)
		}

		cfg, err = clientcmd.BuildConfigFromFlags("", serviceAccountKubeconfig(t, "foo", "reader"))
		if err != nil {
			t.Fatal(err)
		}
		review, err := kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().SelfSubjectReviews().Create(apiContext(t), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := review.Status.UserInfo.Username, "system:serviceaccount:foo:reader"; got != want {
			t.Errorf("ServiceAccount token authenticates as %q, want %q", got, want)
		}
	})

	t.Run("pause", func(t *testing.T) {
		resume := pauseAPIServer(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := ses.List(ctx, metav1.ListOptions{}); err == nil {
			t.Error("the paused API server answered")
		}
		resume()
		if _, err := ses.List(apiContext(t), metav1.ListOptions{}); err != nil {
			t.Errorf("after resume: %v", err)
		}
	})
}
