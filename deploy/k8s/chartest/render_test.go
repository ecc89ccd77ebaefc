package chartest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Paths relative to this directory.
const (
	k8sDir         = ".."
	chartDir       = "../helm/gamerelay"
	productionFile = "../helm/values-production.yaml"
	operationsDoc  = "../../../docs/operations.md"
)

// valueSet is one way of installing the chart that the tests render.
type valueSet struct {
	name string
	args []string // extra helm template arguments
}

// valueSets covers the default values, the production example and the
// switches that change which objects exist.
var valueSets = []valueSet{
	{"default", nil},
	{"production", []string{"-f", productionFile}},
	{"embedded-sequencer", []string{"--set", "gateway.embedSequencer=true"}},
	{"everything-on-creds", []string{"--set", strings.Join([]string{
		"nats.auth.mode=creds",
		"networkPolicy.enabled=true",
		"serviceMonitor.enabled=true",
		"prometheusRule.enabled=true",
		"grafanaDashboard.enabled=true",
		"gateway.ingress.enabled=true",
		"gateway.autoscaling.enabled=true",
		"gateway.autoscaling.targetMemoryUtilizationPercentage=80",
		"secrets.keys.apiKeys=api-keys",
		"gateway.origins={https://a.example,https://b.example}",
	}, ",")}},
	{"no-archiver-no-auth", []string{"--set", "archiver.enabled=false,nats.auth.mode=none,networkPolicy.enabled=false"}},
	{"tls-nkey", []string{"--set", strings.Join([]string{
		"nats.auth.mode=nkey",
		"nats.tls.enabled=true",
		"archiver.mongoTLSSecret=mongo-ca",
		"secrets.keys.apiKeys=api-keys",
	}, ",")}},
	{"tls-server-only", []string{"--set", "nats.tls.enabled=true,nats.tls.clientCertificates=false"}},
	// A token key rotation: the current key with its id, the other one
	// in the keys file.
	{"token-rotation", []string{"--set", strings.Join([]string{
		"secrets.keys.tokenKeys=token-keys",
		"gateway.tokens.secretID=2026-02",
		"gateway.allowCreate=true",
		"gateway.tokens.maxLifetime=12h",
		"gateway.tokens.ttl=6h",
		"gateway.tokens.leeway=30s",
	}, ",")}},
	// Tokens of an identity provider and a studio's own key pair, no HS256
	// secret; the JWKS host is opened in the gateway's NetworkPolicy.
	{"token-public-keys-jwks", []string{"--set", strings.Join([]string{
		"secrets.keys.tokenSecret=",
		"gateway.tokens.publicKeys[0].kid=studio-2026",
		"gateway.tokens.publicKeys[0].key=token-public-studio-2026.pem",
		"gateway.tokens.publicKeys[1].kid=",
		"gateway.tokens.publicKeys[1].key=tls.crt",
		"gateway.tokens.publicKeys[1].secret=legacy-signer",
		"gateway.tokens.jwksURL=https://idp.example.com/.well-known/jwks.json",
		"gateway.tokens.audience=gamerelay",
		"gateway.tokens.issuer=https://idp.example.com/",
		"networkPolicy.jwksTo[0].ipBlock.cidr=0.0.0.0/0",
	}, ",")}},
	// Behind the chart's Ingress with the controller's network trusted:
	// caps and per-address limits on.
	{"ingress-trusted-proxies", []string{"--set", strings.Join([]string{
		"gateway.ingress.enabled=true",
		"gateway.trustedProxies={10.244.0.0/16,fd00:10:244::/56}",
		"gateway.maxConns=40000",
		"gateway.maxConnsPerAddr=200",
		"gateway.joinBurst=50",
		"gateway.anonymousPrefix=public-",
		"gateway.allowAnonymous=true",
	}, ","), "--set-json", "gateway.joinRate=7.5"}},
	// A load balancer that keeps client addresses, no proxy in front: the
	// per-address limits count the peers.
	{"loadbalancer-local", []string{"--set", "gateway.service.type=LoadBalancer,gateway.service.externalTrafficPolicy=Local,gateway.maxConnsPerAddr=100"}},
}

// helmBin finds helm: $HELM (set by the Makefile), else bin/tools.
func helmBin(t testing.TB) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	for _, pat := range []string{"../../../bin/tools/helm-*", "../../../bin/tools/helm"} {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			sort.Strings(m)
			abs, err := filepath.Abs(m[len(m)-1])
			if err != nil {
				t.Fatal(err)
			}
			return abs
		}
	}
	t.Fatal("helm not found: run `make test-k8s` (it installs helm into bin/tools) or set HELM")
	return ""
}

// run runs a command and returns its stdout, failing with its stderr.
func run(t testing.TB, env []string, name string, args ...string) []byte {
	t.Helper()
	out, err := tryRun(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func tryRun(env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w\n%s%s", err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// render runs helm template with the release name the manifests use.
func render(t testing.TB, args ...string) []byte {
	t.Helper()
	return run(t, nil, helmBin(t), append([]string{"template", "gamerelay", chartDir}, args...)...)
}

// object is one rendered document decoded into its API type.
type object struct {
	kind, name string
	obj        any
}

// PrometheusRule and ServiceMonitor are CRDs (monitoring.coreos.com/v1):
// checked structurally against the fields the chart may use.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleFile `json:"spec"`
}

type ruleFile struct {
	Groups []ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []rule `json:"rules"`
}

type rule struct {
	Alert         string            `json:"alert,omitempty"`
	Record        string            `json:"record,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
			Relabelings   []struct {
				SourceLabels []string `json:"sourceLabels,omitempty"`
				Separator    string   `json:"separator,omitempty"`
				TargetLabel  string   `json:"targetLabel,omitempty"`
				Regex        string   `json:"regex,omitempty"`
				Replacement  string   `json:"replacement,omitempty"`
				Action       string   `json:"action,omitempty"`
			} `json:"relabelings,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// newTyped returns the typed object for an apiVersion and kind, or nil.
func newTyped(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1 Service":
		return &corev1.Service{}
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}
	case "v1 Secret":
		return &corev1.Secret{}
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "networking.k8s.io/v1 Ingress":
		return &networkingv1.Ingress{}
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &serviceMonitor{}
	case "monitoring.coreos.com/v1 PrometheusRule":
		return &prometheusRule{}
	}
	return nil
}

// splitDocs splits a YAML stream on document separators, dropping empty
// documents (comments only).
func splitDocs(stream []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), stream...), []byte("\n---")) {
		empty := true
		for _, line := range strings.Split(string(d), "\n") {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, d)
		}
	}
	return docs
}

// decodeStrict decodes every document of a rendered stream into its API
// type, rejecting unknown and duplicate fields and unknown kinds.
func decodeStrict(stream []byte) ([]object, error) {
	var objs []object
	var errs []error
	for i, doc := range splitDocs(stream) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i, err))
			continue
		}
		typed := newTyped(tm.APIVersion, tm.Kind)
		if typed == nil {
			errs = append(errs, fmt.Errorf("document %d: unexpected %s %s", i, tm.APIVersion, tm.Kind))
			continue
		}
		if err := yaml.UnmarshalStrict(doc, typed); err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err))
			continue
		}
		name := typed.(metav1.Object).GetName()
		objs = append(objs, object{kind: tm.Kind, name: name, obj: typed})
	}
	return objs, errors.Join(errs...)
}

// renderObjects renders a value set and decodes it strictly.
func renderObjects(t testing.TB, vs valueSet) []object {
	t.Helper()
	objs, err := decodeStrict(render(t, vs.args...))
	if err != nil {
		t.Fatalf("value set %s: %v", vs.name, err)
	}
	return objs
}

// all returns the objects of type T.
func all[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}
