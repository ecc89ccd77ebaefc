package chartest

import (
	"slices"
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// gatewayOf renders a value set and returns the gateway's container, its
// pod's Secret files (mount path → "secret/key") and the NetworkPolicies.
func gatewayOf(t *testing.T, vs valueSet) (corev1.Container, map[string]string, []*networkingv1.NetworkPolicy) {
	t.Helper()
	objs := renderObjects(t, vs)
	for _, d := range all[*appsv1.Deployment](objs) {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] != "gateway" {
			continue
		}
		pod := d.Spec.Template.Spec
		files := map[string]string{}
		for _, v := range pod.Volumes {
			if v.Projected == nil {
				continue
			}
			for _, m := range pod.Containers[0].VolumeMounts {
				if m.Name != v.Name {
					continue
				}
				for _, src := range v.Projected.Sources {
					if src.Secret == nil {
						continue
					}
					for _, it := range src.Secret.Items {
						files[m.MountPath+"/"+it.Path] = src.Secret.Name + "/" + it.Key
					}
				}
			}
		}
		return pod.Containers[0], files, all[*networkingv1.NetworkPolicy](objs)
	}
	t.Fatalf("%s: no gateway Deployment", vs.name)
	return corev1.Container{}, nil, nil
}

// valueSetNamed returns the value set of that name.
func valueSetNamed(t *testing.T, name string) valueSet {
	t.Helper()
	for _, vs := range valueSets {
		if vs.name == name {
			return vs
		}
	}
	t.Fatalf("no value set %q", name)
	return valueSet{}
}

// absent marks an env var the gateway must not get.
const absent = "<absent>"

// checkEnv compares the container's env with want (absent: not set).
func checkEnv(t *testing.T, what string, c corev1.Container, want map[string]string) {
	t.Helper()
	for name, w := range want {
		got, ok := env(c, name)
		switch {
		case w == absent && ok:
			t.Errorf("%s: %s=%q, want it unset", what, name, got)
		case w != absent && !ok:
			t.Errorf("%s: %s unset, want %q", what, name, w)
		case w != absent && got != w:
			t.Errorf("%s: %s=%q, want %q", what, name, got, w)
		}
	}
}

// The token values reach the gateway's token flags, and every key comes
// from a Secret key mounted as a file.
func TestGatewayTokenFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		set   string
		env   map[string]string
		files map[string]string // mounted file → Secret/key
		jwks  int32             // the JWKS port the gateway's NetworkPolicy opens; 0: none
	}{
		{
			set: "default",
			env: map[string]string{
				"GAMERELAY_TOKEN_SECRET_FILE":  "/etc/gamerelay/secrets/token-secret",
				"GAMERELAY_TOKEN_SECRET_ID":    absent,
				"GAMERELAY_TOKEN_KEYS_FILE":    absent,
				"GAMERELAY_TOKEN_PUBLIC_KEY":   absent,
				"GAMERELAY_TOKEN_JWKS_URL":     absent,
				"GAMERELAY_TOKEN_AUDIENCE":     absent,
				"GAMERELAY_TOKEN_ISSUER":       absent,
				"GAMERELAY_TOKEN_MAX_LIFETIME": "24h",
				"GAMERELAY_TOKEN_LEEWAY":       "0s",
				"GAMERELAY_TOKEN_TTL":          "24h",
			},
			files: map[string]string{"/etc/gamerelay/secrets/token-secret": "gamerelay/token-secret"},
		},
		{
			set: "token-rotation",
			env: map[string]string{
				"GAMERELAY_TOKEN_SECRET_FILE":  "/etc/gamerelay/secrets/token-secret",
				"GAMERELAY_TOKEN_SECRET_ID":    "2026-02",
				"GAMERELAY_TOKEN_KEYS_FILE":    "/etc/gamerelay/secrets/token-keys",
				"GAMERELAY_TOKEN_MAX_LIFETIME": "12h",
				"GAMERELAY_TOKEN_LEEWAY":       "30s",
				"GAMERELAY_TOKEN_TTL":          "6h",
				"GAMERELAY_ALLOW_CREATE":       "true",
			},
			files: map[string]string{
				"/etc/gamerelay/secrets/token-secret": "gamerelay/token-secret",
				"/etc/gamerelay/secrets/token-keys":   "gamerelay/token-keys",
			},
		},
		{
			set: "production",
			env: map[string]string{
				"GAMERELAY_TOKEN_SECRET_FILE": "/etc/gamerelay/secrets/token-secret",
				"GAMERELAY_TOKEN_SECRET_ID":   "2026-02",
				"GAMERELAY_TOKEN_KEYS_FILE":   "/etc/gamerelay/secrets/token-keys",
				"GAMERELAY_TOKEN_LEEWAY":      "30s",
				"GAMERELAY_API_KEYS_FILE":     "/etc/gamerelay/secrets/api-keys",
			},
			files: map[string]string{
				"/etc/gamerelay/secrets/token-secret": "gamerelay/token-secret",
				"/etc/gamerelay/secrets/token-keys":   "gamerelay/token-keys",
				"/etc/gamerelay/secrets/api-keys":     "gamerelay/api-keys",
			},
		},
		{
			set: "token-public-keys-jwks",
			env: map[string]string{
				"GAMERELAY_TOKEN_SECRET_FILE": absent,
				"GAMERELAY_TOKEN_SECRET_ID":   absent,
				"GAMERELAY_TOKEN_KEYS_FILE":   absent,
				"GAMERELAY_TOKEN_PUBLIC_KEY":  "studio-2026=/etc/gamerelay/token-public-keys/0.pem,/etc/gamerelay/token-public-keys/1.pem",
				"GAMERELAY_TOKEN_JWKS_URL":    "https://idp.example.com/.well-known/jwks.json",
				"GAMERELAY_TOKEN_AUDIENCE":    "gamerelay",
				"GAMERELAY_TOKEN_ISSUER":      "https://idp.example.com/",
			},
			files: map[string]string{
				"/etc/gamerelay/token-public-keys/0.pem": "gamerelay/token-public-studio-2026.pem",
				"/etc/gamerelay/token-public-keys/1.pem": "legacy-signer/tls.crt",
			},
			jwks: 443,
		},
	} {
		t.Run(tc.set, func(t *testing.T) {
			t.Parallel()
			c, files, nps := gatewayOf(t, valueSetNamed(t, tc.set))
			checkEnv(t, tc.set, c, tc.env)
			for f, want := range tc.files {
				if got := files[f]; got != want {
					t.Errorf("%s: %s is mounted from %q, want %q", tc.set, f, got, want)
				}
			}
			for f, src := range files {
				if _, ok := tc.files[f]; !ok && (src == "gamerelay/token-secret" || src == "gamerelay/token-keys") {
					t.Errorf("%s: %s mounted (from %s)", tc.set, f, src)
				}
			}
			if got := jwksPort(nps); got != tc.jwks {
				t.Errorf("%s: the gateway's NetworkPolicy opens port %d for the JWKS, want %d", tc.set, got, tc.jwks)
			}
		})
	}
}

// jwksPort returns the port the gateway's NetworkPolicy opens for
// gateway.tokens.jwksURL: an egress rule on neither DNS nor NATS nor
// MongoDB; 0 if there is none.
func jwksPort(nps []*networkingv1.NetworkPolicy) int32 {
	for _, np := range nps {
		if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"] != "gateway" {
			continue
		}
		for _, e := range np.Spec.Egress {
			for _, p := range e.Ports {
				if p.Port == nil {
					continue
				}
				switch n := p.Port.IntVal; n {
				case 0, 53, 4222, 27017:
				default:
					return n
				}
			}
		}
	}
	return 0
}

// checkClientAddresses: limits per client address are on only where the
// gateways see client addresses, through trusted proxies or a Service that
// keeps them with no Ingress in front; elsewhere every player would count
// as the proxy's address and be throttled together.
func checkClientAddresses(t *testing.T, objs []object, gw *appsv1.Deployment) {
	t.Helper()
	if gw == nil {
		return
	}
	c := gw.Spec.Template.Spec.Containers[0]
	if _, ok := env(c, "GAMERELAY_TRUSTED_PROXIES"); ok {
		return
	}
	keeps := len(all[*networkingv1.Ingress](objs)) == 0
	if keeps {
		keeps = false
		for _, s := range all[*corev1.Service](objs) {
			if s.Labels["app.kubernetes.io/component"] == "gateway" && s.Spec.ClusterIP != corev1.ClusterIPNone &&
				(s.Spec.Type == corev1.ServiceTypeLoadBalancer || s.Spec.Type == corev1.ServiceTypeNodePort) &&
				s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
				keeps = true
			}
		}
	}
	if keeps {
		return
	}
	for _, name := range []string{"GAMERELAY_JOIN_RATE", "GAMERELAY_MAX_CONNS_PER_ADDR"} {
		// Unset means the flag's default, which limits joins.
		if v, ok := env(c, name); !ok || v != "0" {
			t.Errorf("%s: %s=%q (set: %v), but the gateways see only their proxies' addresses (no trustedProxies, no Service keeping client addresses): want \"0\"", gw.Name, name, v, ok)
		}
	}
}

// The admission values reach the gateway's flags; the per-address limits
// only where client addresses are known.
func TestGatewayAdmissionFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		set string
		env map[string]string
	}{
		{"default", map[string]string{
			"GAMERELAY_MAX_CONNS":          "3000",
			"GAMERELAY_TRUSTED_PROXIES":    absent,
			"GAMERELAY_MAX_CONNS_PER_ADDR": "0",
			"GAMERELAY_JOIN_RATE":          "0",
			"GAMERELAY_JOIN_BURST":         "100",
			"GAMERELAY_ANONYMOUS_PREFIX":   absent,
		}},
		{"ingress-trusted-proxies", map[string]string{
			"GAMERELAY_MAX_CONNS":          "40000",
			"GAMERELAY_TRUSTED_PROXIES":    "10.244.0.0/16,fd00:10:244::/56",
			"GAMERELAY_MAX_CONNS_PER_ADDR": "200",
			"GAMERELAY_JOIN_RATE":          "7.5",
			"GAMERELAY_JOIN_BURST":         "50",
			"GAMERELAY_ALLOW_ANONYMOUS":    "true",
			"GAMERELAY_ANONYMOUS_PREFIX":   "public-",
		}},
		{"production", map[string]string{
			"GAMERELAY_MAX_CONNS":          "6000",
			"GAMERELAY_TRUSTED_PROXIES":    "10.244.0.0/16",
			"GAMERELAY_MAX_CONNS_PER_ADDR": "200",
			"GAMERELAY_JOIN_RATE":          "20",
			"GAMERELAY_JOIN_BURST":         "100",
		}},
		{"loadbalancer-local", map[string]string{
			"GAMERELAY_TRUSTED_PROXIES":    absent,
			"GAMERELAY_MAX_CONNS_PER_ADDR": "100",
			"GAMERELAY_JOIN_RATE":          "20",
		}},
		// The same Service behind an Ingress: the players come through the
		// controller.
		{"loadbalancer-local-ingress", map[string]string{
			"GAMERELAY_MAX_CONNS_PER_ADDR": "0",
			"GAMERELAY_JOIN_RATE":          "0",
		}},
	} {
		t.Run(tc.set, func(t *testing.T) {
			t.Parallel()
			vs := valueSet{name: tc.set}
			if tc.set == "loadbalancer-local-ingress" {
				vs.args = append(slices.Clone(valueSetNamed(t, "loadbalancer-local").args), "--set", "gateway.ingress.enabled=true")
			} else {
				vs = valueSetNamed(t, tc.set)
			}
			c, _, _ := gatewayOf(t, vs)
			checkEnv(t, tc.set, c, tc.env)
		})
	}
}

// connMiB is docs/capacity.md's planning figure for a gateway connection:
// a player whose game the pod hosts for it alone, the game's feed cache
// full. liveShare is the share of the memory limit the live heap may
// reach at the connection cap, the rest being the Go runtime's headroom.
const (
	connMiB   = 0.47
	liveShare = 0.75
)

// The shipped values size the gateway as docs/capacity.md says: a
// connection cap, which a full pod's memory holds, and a memory request
// equal to the limit.
func TestShippedGatewaySizing(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"default", "production"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, _, _ := gatewayOf(t, valueSetNamed(t, name))
			v, _ := env(c, "GAMERELAY_MAX_CONNS")
			conns, err := strconv.Atoi(v)
			if err != nil || conns <= 0 {
				t.Fatalf("GAMERELAY_MAX_CONNS=%q: want a connection cap", v)
			}
			limit, request := c.Resources.Limits[corev1.ResourceMemory], c.Resources.Requests[corev1.ResourceMemory]
			if limit.Cmp(request) != 0 {
				t.Errorf("memory request %s, limit %s: want them equal (a full pod uses its limit)", request.String(), limit.String())
			}
			if live := float64(conns) * connMiB * (1 << 20); live > liveShare*float64(limit.Value()) {
				t.Errorf("maxConns %d x %.2f MiB = %.0f MiB, more than %.0f %% of the %s memory limit", conns, connMiB, live/(1<<20), 100*liveShare, limit.String())
			}
		})
	}
}
