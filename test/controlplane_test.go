package test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// controlPlane is an etcd and a kube-apiserver serving on 127.0.0.1 only, run as plain child
// processes so a test can pause the API server by PID. Clients authenticate with certificates
// from ca (the admin is in system:masters; see userConfig for other identities) or with
// ServiceAccount tokens; authorization is RBAC.
type controlPlane struct {
	dir             string // Certificates, etcd data and logs.
	host            string // https://127.0.0.1:PORT
	etcdURL         string
	ca              *authority
	etcd, apiserver *process
	apiserverBinary string
	apiserverArgs   []string // without --secure-port
	logs            []*os.File
	admin           *rest.Config
}

// startControlPlane starts etcd and kube-apiserver from binDir, keeping their files in dir, and
// waits until the API server is ready. The result is never nil: stop it even on error.
func startControlPlane(ctx context.Context, binDir, dir string) (*controlPlane, error) {
	cp := &controlPlane{dir: dir}
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return cp, err
		}
		ports[i] = p
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	cp.etcdURL = etcdURL
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	cp.host = "https://127.0.0.1:" + strconv.Itoa(ports[2])

	var err error
	if cp.etcd, err = cp.start(filepath.Join(binDir, "etcd"),
		"--name=e2e",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=e2e="+peerURL,
		"--unsafe-no-fsync=true", // Throwaway data; fsync only slows the tests down.
		"--log-level=warn",
	); err != nil {
		return cp, err
	}

	if cp.ca, err = newAuthority(); err != nil {
		return cp, err
	}
	files, err := cp.writeCerts()
	if err != nil {
		return cp, err
	}
	if err := poll(ctx, 30*time.Second, cp.etcd, func(ctx context.Context) error {
		return httpOK(ctx, etcdURL+"/health")
	}); err != nil {
		return cp, fmt.Errorf("etcd: %w", err)
	}

	cp.apiserverBinary = filepath.Join(binDir, "kube-apiserver")
	cp.apiserverArgs = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--tls-cert-file=" + files["serving.crt"],
		"--tls-private-key-file=" + files["serving.key"],
		"--client-ca-file=" + files["ca.crt"],
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + cp.host,
		"--service-account-key-file=" + files["sa.pub"],
		"--service-account-signing-key-file=" + files["sa.key"],
		// Dual-stack, so Services can have an IPv4 and an IPv6 cluster IP. Nothing is ever sent
		// to these addresses: tests only write them into ConfigMaps.
		"--service-cluster-ip-range=10.0.0.0/24,fd00:10::/112",
		// No endpoints for the kubernetes Service: they would name a non-loopback address.
		"--endpoint-reconciler-type=none",
	}
	if cp.apiserver, err = cp.startAPIServer(ports[2]); err != nil {
		return cp, err
	}

	if cp.admin, err = cp.userConfig("e2e-admin", "system:masters"); err != nil {
		return cp, err
	}
	if err := cp.waitAPIServer(ctx, cp.apiserver, cp.host); err != nil {
		return cp, fmt.Errorf("kube-apiserver: %w", err)
	}
	return cp, nil
}

// startAPIServer starts a kube-apiserver of this control plane (on its etcd, with its
// certificates) on port, with extra flags.
func (cp *controlPlane) startAPIServer(port int, extra ...string) (*process, error) {
	args := append(slices.Clone(cp.apiserverArgs), "--secure-port="+strconv.Itoa(port))
	return cp.start(cp.apiserverBinary, append(args, extra...)...)
}

// waitAPIServer waits until the API server p at host answers /readyz.
func (cp *controlPlane) waitAPIServer(ctx context.Context, p *process, host string) error {
	cfg := rest.CopyConfig(cp.admin)
	cfg.Host = host
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return poll(ctx, 60*time.Second, p, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
}

// start runs one control-plane binary with its output in dir/NAME.log.
func (cp *controlPlane) start(path string, args ...string) (*process, error) {
	name := filepath.Base(path)
	logName := filepath.Join(cp.dir, name+".log")
	for i := 2; ; i++ { // a restart, or a second API server: a log of its own
		if _, err := os.Stat(logName); errors.Is(err, os.ErrNotExist) {
			break
		}
		logName = filepath.Join(cp.dir, fmt.Sprintf("%s.%d.log", name, i))
	}
	log, err := os.Create(logName)
	if err != nil {
		return nil, err
	}
	cp.logs = append(cp.logs, log)
	return startProcess(name, log, cp.dir, path, args...)
}

// writeCerts writes the files the API server needs and returns their paths by name.
func (cp *controlPlane) writeCerts() (map[string]string, error) {
	servingCert, servingKey, err := cp.ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
	})
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saKeyDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	contents := map[string][]byte{
		"ca.crt":      cp.ca.certPEM,
		"serving.crt": servingCert,
		"serving.key": servingKey,
		"sa.key":      pemBlock("PRIVATE KEY", saKeyDER),
		"sa.pub":      pemBlock("PUBLIC KEY", saPubDER),
	}
	paths := make(map[string]string, len(contents))
	for name, b := range contents {
		paths[name] = filepath.Join(cp.dir, name)
		if err := os.WriteFile(paths[name], b, 0o600); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// userConfig returns a client config that authenticates as user, member of groups, with a
// client certificate. Without RBAC bindings such a user may do nothing.
func (cp *controlPlane) userConfig(user string, groups ...string) (*rest.Config, error) {
	cert, key, err := cp.ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            cp.host,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.ca.certPEM, CertData: cert, KeyData: key},
		// client-go's default of 5 requests per second would throttle tests that create many
		// objects.
		QPS:   1000,
		Burst: 1000,
	}, nil
}

// stop stops the API server, then etcd. It is safe on a partly started control plane.
func (cp *controlPlane) stop() {
	cp.apiserver.stop(10 * time.Second)
	cp.etcd.stop(10 * time.Second)
	for _, f := range cp.logs {
		f.Close()
	}
}

// logTails returns the last lines of each control-plane log, to explain a failed start.
func (cp *controlPlane) logTails() string {
	var b strings.Builder
	for _, f := range cp.logs {
		data, err := os.ReadFile(f.Name())
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		lines = lines[max(0, len(lines)-40):]
		fmt.Fprintf(&b, "--- last lines of %s:\n%s\n", filepath.Base(f.Name()), strings.Join(lines, "\n"))
	}
	return b.String()
}

// writeKubeconfig writes cfg (certificates or a bearer token) as a kubeconfig file.
func writeKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
	}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e"}
	kc.CurrentContext = "e2e"
	return clientcmd.WriteToFile(*kc, path)
}

// installIstioCRDs creates every CRD of istio.io/api's bundle and waits until all are
// established and ServiceEntry is discoverable in all its versions.
func installIstioCRDs(ctx context.Context, cfg *rest.Config) error {
	file, err := istioCRDFile()
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	client, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	crds := client.ApiextensionsV1().CustomResourceDefinitions()
	created := map[string]bool{}
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 1<<16)
	for {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := dec.Decode(&crd); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if crd.Name == "" {
			continue // An empty YAML document.
		}
		if _, err := crds.Create(ctx, &crd, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
		created[crd.Name] = true
	}

	var lastEstablished time.Time
	err = poll(ctx, 30*time.Second, nil, func(ctx context.Context) error {
		list, err := crds.List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		established := 0
		for _, crd := range list.Items {
			if !created[crd.Name] {
				continue
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					established++
					if c.LastTransitionTime.After(lastEstablished) {
						lastEstablished = c.LastTransitionTime.Time
					}
				}
			}
		}
		if established != len(created) {
			return fmt.Errorf("%d of %d CRDs established", established, len(created))
		}
		for _, v := range []string{"v1", "v1beta1", "v1alpha3"} {
			gv := "networking.istio.io/" + v
			list, err := client.Discovery().ServerResourcesForGroupVersion(gv)
			if err != nil {
				return fmt.Errorf("discovery of %s: %w", gv, err)
			}
			if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == "serviceentries" }) {
				return fmt.Errorf("%s does not serve serviceentries yet", gv)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The API server delays every create by 2s while its CRD was established less than 2s ago
	// (apiextensions-apiserver's customresource_handler.go); wait that out once, here.
	time.Sleep(time.Until(lastEstablished.Add(2 * time.Second)))
	return nil
}

// httpOK fails unless GET url answers 200.
func httpOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

// authority is a throwaway CA for the API server's serving and client certificates.
type authority struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
}

func newAuthority() (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "coredns-istio-e2e-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key, certPEM: pemBlock("CERTIFICATE", der)}, nil
}

// issue signs tmpl (subject, SANs and extended key usages filled in) for a new key and
// returns the certificate and key in PEM.
func (a *authority) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62)); err != nil {
		return nil, nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter = a.cert.NotBefore, a.cert.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
