package chartest

import (
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
