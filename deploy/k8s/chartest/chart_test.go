package chartest

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestHelmLint(t *testing.T) {
	t.Parallel()
	for _, vs := range []valueSet{valueSets[0], valueSets[1]} {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			run(t, nil, helmBin(t), append([]string{"lint", "--strict", chartDir}, vs.args...)...)
		})
	}
}

// Every rendered object decodes into its Kubernetes API type with unknown
// fields rejected, and names and labels are valid.
func TestRenderDecodesStrictly(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			objs := renderObjects(t, vs)
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			for _, o := range objs {
				m := o.obj.(metav1.Object)
				for _, msg := range validation.IsDNS1123Subdomain(m.GetName()) {
					t.Errorf("%s %q: name: %s", o.kind, m.GetName(), msg)
				}
				if o.kind == "Service" {
					for _, msg := range validation.IsDNS1035Label(m.GetName()) {
						t.Errorf("Service %q: name: %s", m.GetName(), msg)
					}
				}
				checkLabels(t, o.kind+" "+m.GetName(), m.GetLabels())
			}
		})
	}
}

func TestDecodeStrictRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	bad := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replica: 2\n"
	if _, err := decodeStrict([]byte(bad)); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("unknown field accepted: %v", err)
	}
	if _, err := decodeStrict([]byte("apiVersion: v9\nkind: Gadget\nmetadata:\n  name: x\n")); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func checkLabels(t *testing.T, what string, l map[string]string) {
	t.Helper()
	for k, v := range l {
		for _, msg := range validation.IsQualifiedName(k) {
			t.Errorf("%s: label key %q: %s", what, k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: label %s=%q: %s", what, k, v, msg)
		}
	}
}

// secretish are env vars (by name) that would hold a secret: the chart
// may set only their -file twins, pointing into a mounted Secret.
var secretish = regexp.MustCompile(`(?i)(SECRET|PASSWORD|API_KEYS?|MONGO$|CREDS_DATA|TOKEN$|NATS_URL|MONGO_URI)`)

// notSecret are env vars secretish matches by name that hold no secret.
var notSecret = map[string]bool{
	"GAMERELAY_TOKEN_SECRET_ID": true, // the key's id, written into every token's header
}

// fileEnv are the env vars naming files gamerelay reads: every one must
// be a file of a read-only Secret mount.
var fileEnv = regexp.MustCompile(`^GAMERELAY_([A-Z_]+_FILE|NATS_CREDS|NATS_NKEY|NATS_TLS_(CA|CERT|KEY)|MONGO_TLS_CA)$`)

// fileListEnv are the env vars naming several files, as comma-separated
// [KEY=]PATH entries (repeated flags): every PATH must be a file of a
// read-only Secret mount.
var fileListEnv = map[string]bool{
	"GAMERELAY_TOKEN_PUBLIC_KEY": true,
}

// envFiles returns the files an env var names: its value for fileEnv, the
// PATHs of its entries for fileListEnv.
func envFiles(e corev1.EnvVar) []string {
	switch {
	case fileEnv.MatchString(e.Name):
		return []string{e.Value}
	case fileListEnv[e.Name]:
		var paths []string
		for _, entry := range strings.Split(e.Value, ",") {
			_, path, ok := strings.Cut(entry, "=")
			if !ok {
				path = entry
			}
			paths = append(paths, path)
		}
		return paths
	}
	return nil
}

// Policies every installation must satisfy, over every value set.
func TestPolicies(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			objs := renderObjects(t, vs)
			deps := all[*appsv1.Deployment](objs)
			pdbs := all[*policyv1.PodDisruptionBudget](objs)
			if len(all[*corev1.Secret](objs)) > 0 {
				t.Error("the chart rendered a Secret: secrets must be referenced, never inlined")
			}
			roles := map[string]*appsv1.Deployment{}
			for _, d := range deps {
				roles[d.Spec.Template.Labels["app.kubernetes.io/component"]] = d
				checkDeployment(t, d)
				n := 0
				for _, p := range pdbs {
					sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
					if err != nil {
						t.Fatalf("PDB %s: %v", p.Name, err)
					}
					if !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
						n++
					}
				}
				if n != 1 {
					t.Errorf("Deployment %s: %d PodDisruptionBudgets select it, want 1", d.Name, n)
				}
			}
			checkRoles(t, vs, roles)
			checkClientAddresses(t, objs, roles["gateway"])
			checkAgreement(t, deps)
			checkServices(t, objs, deps)
			checkHPAs(t, all[*autoscalingv2.HorizontalPodAutoscaler](objs), deps)
			checkNetworkPolicies(t, all[*networkingv1.NetworkPolicy](objs), deps)
			for _, r := range all[*prometheusRule](objs) {
				checkRuleFile(t, "PrometheusRule "+r.Name, r.Spec, partitionsOf(t, deps))
			}
		})
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	name := "Deployment " + d.Name
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: selector %v does not select its pod template (%v)", name, d.Spec.Selector, err)
	}
	pod := d.Spec.Template.Spec
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false (no role uses the API)", name)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Errorf("%s: enableServiceLinks must be false (service env vars could shadow GAMERELAY_*)", name)
	}
	if len(pod.InitContainers)+len(pod.EphemeralContainers) > 0 {
		t.Errorf("%s: unexpected init/ephemeral containers", name)
	}
	for _, c := range pod.Containers {
		checkContainer(t, name+" container "+c.Name, pod.SecurityContext, c)
		checkSecretFiles(t, name+" container "+c.Name, pod, c)
	}
	grace := int64(30)
	if pod.TerminationGracePeriodSeconds != nil {
		grace = *pod.TerminationGracePeriodSeconds
	}
	for _, c := range pod.Containers {
		drain, hasDrain := envDuration(t, c, "GAMERELAY_DRAIN_TIMEOUT")
		var sleep time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			if c.Lifecycle.PreStop.Sleep == nil {
				t.Errorf("%s/%s: preStop must be a sleep action (the image has no shell)", name, c.Name)
			} else {
				sleep = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
			}
		}
		if c.Name == "gateway" && sleep < 3*time.Second {
			t.Errorf("%s: the gateway needs a preStop sleep of a few seconds so endpoints update before the drain, got %v", name, sleep)
		}
		if hasDrain && time.Duration(grace)*time.Second <= drain+sleep {
			t.Errorf("%s: terminationGracePeriodSeconds %d must exceed preStop sleep %v + drain timeout %v", name, grace, sleep, drain)
		}
	}
}

func checkContainer(t *testing.T, name string, psc *corev1.PodSecurityContext, c corev1.Container) {
	t.Helper()
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
			t.Errorf("%s: no %s request", name, r)
		}
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
		t.Errorf("%s: no memory limit", name)
	}
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
	}
	for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s probe", name, kind)
			continue
		}
		want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[kind]
		if p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "admin" || !ports["admin"] {
			t.Errorf("%s: %s probe is %s on port %s, want %s on the admin port", name, kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), want)
		}
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", name)
		return
	}
	nonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot || sc.RunAsNonRoot == nil && psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	if !nonRoot {
		t.Errorf("%s: runAsNonRoot is not true", name)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		t.Errorf("%s: runs as UID 0", name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities must drop ALL and add none", name)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && psc != nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile is not RuntimeDefault", name)
	}
	if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") && !strings.Contains(c.Image, "@") {
		t.Errorf("%s: image %q is not pinned", name, c.Image)
	}
	defined := map[string]bool{}
	for _, e := range c.Env {
		if defined[e.Name] {
			t.Errorf("%s: env %s set twice (the last one wins silently)", name, e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("%s: env %s comes from a Secret: secrets are mounted as files, never put into the environment", name, e.Name)
		}
		if secretish.MatchString(e.Name) && !strings.HasSuffix(e.Name, "_FILE") && !notSecret[e.Name] {
			t.Errorf("%s: env %s would hold a secret: set its -file twin to a mounted file instead", name, e.Name)
		}
		if strings.Contains(e.Value, "://") && strings.Contains(e.Value, "@") {
			t.Errorf("%s: env %s has credentials inline in %q", name, e.Name, e.Value)
		}
		for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				t.Errorf("%s: env %s refers to $(%s) before it is defined", name, e.Name, m[1])
			}
		}
		if strings.HasPrefix(e.Name, "GAMERELAY_") && regexp.MustCompile(`^[0-9.]+e[+-]?[0-9]+$`).MatchString(e.Value) {
			t.Errorf("%s: env %s=%q is in float notation; flags want an integer", name, e.Name, e.Value)
		}
		defined[e.Name] = true
	}
}

// checkSecretFiles: every file env var names a file of a read-only mount
// of Secrets, and every such file is named by one (nothing is mounted
// that no flag reads).
func checkSecretFiles(t *testing.T, name string, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	files := map[string]bool{} // path → named by an env var
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("%s: mount %s has no volume", name, m.Name)
			continue
		}
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			items = v.Secret.Items
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret == nil {
					t.Errorf("%s: volume %s projects something else than Secrets", name, v.Name)
					continue
				}
				items = append(items, src.Secret.Items...)
			}
		default:
			continue
		}
		if !m.ReadOnly {
			t.Errorf("%s: Secret volume %s mounted writable", name, v.Name)
		}
		if len(items) == 0 {
			t.Errorf("%s: Secret volume %s mounts whole Secrets: name the keys it needs", name, v.Name)
		}
		for _, it := range items {
			p := m.MountPath + "/" + it.Path
			if files[p] {
				t.Errorf("%s: %s mounted twice", name, p)
			}
			files[p] = false
		}
	}
	for _, e := range c.Env {
		for _, f := range envFiles(e) {
			if _, ok := files[f]; !ok {
				t.Errorf("%s: env %s=%q names no file of a Secret mount (%s)", name, e.Name, e.Value, f)
				continue
			}
			files[f] = true
		}
	}
	for p, used := range files {
		if !used {
			t.Errorf("%s: %s is mounted but no flag reads it", name, p)
		}
	}
}

// env returns a container's literal env value.
func env(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, e.ValueFrom == nil
		}
	}
	return "", false
}

func envDuration(t *testing.T, c corev1.Container, name string) (time.Duration, bool) {
	t.Helper()
	v, ok := env(c, name)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Errorf("container %s: %s=%q: %v", c.Name, name, v, err)
	}
	return d, true
}

// checkRoles checks which roles run and how, per value set.
func checkRoles(t *testing.T, vs valueSet, roles map[string]*appsv1.Deployment) {
	t.Helper()
	gw := roles["gateway"]
	if gw == nil {
		t.Fatal("no gateway Deployment")
	}
	embedded, _ := env(gw.Spec.Template.Spec.Containers[0], "GAMERELAY_EMBED_SEQUENCER")
	switch {
	case embedded == "true" && roles["sequencer"] != nil:
		t.Error("gateway embeds the sequencer and a sequencer Deployment exists too")
	case embedded != "true" && roles["sequencer"] == nil:
		t.Error("no sequencer: neither a Deployment nor embedded in the gateway")
	case embedded == "true":
		if _, ok := env(gw.Spec.Template.Spec.Containers[0], "GAMERELAY_REPLICAS"); !ok {
			t.Error("gateway embeds the sequencer but gets no sequencer settings (GAMERELAY_REPLICAS)")
		}
	}
	if want := vs.name != "embedded-sequencer"; (embedded != "true") != want {
		t.Errorf("GAMERELAY_EMBED_SEQUENCER=%q", embedded)
	}
	if want := vs.name != "no-archiver-no-auth"; (roles["archiver"] != nil) != want {
		t.Errorf("archiver Deployment present=%v, want %v", roles["archiver"] != nil, want)
	}
	for role, d := range roles {
		if c := d.Spec.Template.Spec.Containers; len(c) != 1 || len(c[0].Args) != 1 || c[0].Args[0] != role {
			t.Errorf("%s: want one container running `gamerelay %s`", d.Name, role)
		}
	}
	if s := roles["sequencer"]; s != nil && s.Spec.Replicas != nil && *s.Spec.Replicas < 2 {
		t.Errorf("sequencer: %d replica(s); run 2 or more so partitions fail over", *s.Spec.Replicas)
	}
}

// checkAgreement: every role uses the same partitions, namespace and image.
func checkAgreement(t *testing.T, deps []*appsv1.Deployment) {
	t.Helper()
	for _, name := range []string{"GAMERELAY_PARTITIONS", "GAMERELAY_NAMESPACE", "GAMERELAY_NATS"} {
		seen := map[string]bool{}
		for _, d := range deps {
			v, _ := env(d.Spec.Template.Spec.Containers[0], name)
			if v == "" {
				t.Errorf("%s: %s not set", d.Name, name)
			}
			if name == "GAMERELAY_NATS" {
				v = regexp.MustCompile(`//[^@/]*@`).ReplaceAllString(v, "//")
			}
			seen[v] = true
		}
		if len(seen) > 1 {
			t.Errorf("roles disagree on %s: %v", name, seen)
		}
	}
	images := map[string]bool{}
	for _, d := range deps {
		images[d.Spec.Template.Spec.Containers[0].Image] = true
	}
	if len(images) != 1 {
		t.Errorf("roles run different images: %v", images)
	}
}

func partitionsOf(t *testing.T, deps []*appsv1.Deployment) int {
	t.Helper()
	v, _ := env(deps[0].Spec.Template.Spec.Containers[0], "GAMERELAY_PARTITIONS")
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 {
		t.Fatalf("GAMERELAY_PARTITIONS=%q", v)
	}
	return p
}

// podsFor returns the Deployments whose pods a selector selects.
func podsFor(sel labels.Selector, deps []*appsv1.Deployment) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, d := range deps {
		if !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

func hasPort(d *appsv1.Deployment, name string) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// checkServices: Services select pods that have their target ports; the
// Ingress and ServiceMonitor point at existing Services and ports; the
// player-facing Service never exposes the admin port.
func checkServices(t *testing.T, objs []object, deps []*appsv1.Deployment) {
	t.Helper()
	svcs := map[string]*corev1.Service{}
	for _, s := range all[*corev1.Service](objs) {
		svcs[s.Name] = s
		selected := podsFor(labels.SelectorFromSet(s.Spec.Selector), deps)
		if len(selected) == 0 {
			t.Errorf("Service %s selects no pods", s.Name)
		}
		for _, p := range s.Spec.Ports {
			for _, d := range selected {
				if p.TargetPort.String() != "" && !hasPort(d, p.TargetPort.String()) {
					t.Errorf("Service %s: pods of %s have no port %q", s.Name, d.Name, p.TargetPort.String())
				}
			}
			if s.Labels["app.kubernetes.io/component"] == "gateway" && p.TargetPort.String() == "admin" {
				t.Errorf("Service %s exposes the admin port (/debug/pprof) with player traffic", s.Name)
			}
		}
	}
	for _, ing := range all[*networkingv1.Ingress](objs) {
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				s := svcs[b.Name]
				if s == nil {
					t.Errorf("Ingress %s: no Service %s", ing.Name, b.Name)
					continue
				}
				if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name }) {
					t.Errorf("Ingress %s: Service %s has no port %q", ing.Name, b.Name, b.Port.Name)
				}
			}
		}
	}
	for _, sm := range all[*serviceMonitor](objs) {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range svcs {
			if sel.Matches(labels.Set(s.Labels)) {
				n++
				for _, ep := range sm.Spec.Endpoints {
					if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == ep.Port }) {
						t.Errorf("ServiceMonitor %s: Service %s has no port %q", sm.Name, s.Name, ep.Port)
					}
				}
				if sel := labels.SelectorFromSet(s.Spec.Selector); len(podsFor(sel, deps)) != len(deps) {
					t.Errorf("ServiceMonitor %s: Service %s does not reach every role", sm.Name, s.Name)
				}
			}
		}
		if n != 1 {
			t.Errorf("ServiceMonitor %s selects %d Services, want 1", sm.Name, n)
		}
	}
}

// checkHPAs: the target exists and has no replica count of its own (helm
// upgrades would otherwise reset what the HPA chose).
func checkHPAs(t *testing.T, hpas []*autoscalingv2.HorizontalPodAutoscaler, deps []*appsv1.Deployment) {
	t.Helper()
	for _, h := range hpas {
		i := slices.IndexFunc(deps, func(d *appsv1.Deployment) bool {
			return h.Spec.ScaleTargetRef.Kind == "Deployment" && d.Name == h.Spec.ScaleTargetRef.Name
		})
		if i < 0 {
			t.Errorf("HPA %s: no Deployment %s", h.Name, h.Spec.ScaleTargetRef.Name)
			continue
		}
		if deps[i].Spec.Replicas != nil {
			t.Errorf("HPA %s: Deployment %s sets replicas too", h.Name, deps[i].Name)
		}
		if len(h.Spec.Metrics) == 0 || h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
			t.Errorf("HPA %s: needs metrics and 2 <= minReplicas <= maxReplicas", h.Name)
		}
	}
}

func checkNetworkPolicies(t *testing.T, nps []*networkingv1.NetworkPolicy, deps []*appsv1.Deployment) {
	t.Helper()
	if len(nps) == 0 {
		return
	}
	covered := map[string]bool{}
	for _, np := range nps {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Fatal(err)
		}
		selected := podsFor(sel, deps)
		if len(selected) != 1 {
			t.Errorf("NetworkPolicy %s selects %d Deployments, want 1", np.Name, len(selected))
			continue
		}
		covered[selected[0].Name] = true
		for _, in := range np.Spec.Ingress {
			for _, p := range in.Ports {
				if p.Port != nil && p.Port.String() != "" && p.Port.IntValue() == 0 && !hasPort(selected[0], p.Port.String()) {
					t.Errorf("NetworkPolicy %s: pods have no port %q", np.Name, p.Port.String())
				}
			}
		}
	}
	for _, d := range deps {
		if !covered[d.Name] {
			t.Errorf("network policies are on but none selects %s", d.Name)
		}
	}
}

// The chart refuses settings that would break a rolling update.
func TestRenderRefusesBadSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, set, want string }{
		{"grace shorter than drain", "gateway.terminationGracePeriodSeconds=25", "must exceed preStopSleepSeconds + drainTimeoutSeconds"},
		{"sequencer grace shorter than drain", "sequencer.terminationGracePeriodSeconds=20", "must exceed sequencer.drainTimeoutSeconds"},
		{"typo in values", "gateway.replicas=3", "additional properties 'replicas' not allowed"},
		{"inline secret value", "secrets.tokenSecret=hunter2", "additional properties 'tokenSecret' not allowed"},
		{"zero partitions", "log.partitions=0", "minimum"},
		{"bad nats url", "nats.url=nats:4222", "nats"},
		{"credentials in the nats url", "nats.url=nats://u:p@nats:4222", "/nats/url"},
		{"no way in", "secrets.keys.tokenSecret=", "no one could join the gateway"},
		{"create without token secret", "secrets.keys.tokenSecret=,gateway.allowAnonymous=true,gateway.allowCreate=true", "gateway.allowCreate needs secrets.keys.tokenSecret"},
		{"secret id without secret", "secrets.keys.tokenSecret=,secrets.keys.tokenKeys=token-keys,gateway.tokens.secretID=k1", "gateway.tokens.secretID names the key"},
		{"two keys for tokens without kid", "gateway.tokens.publicKeys[0].kid=,gateway.tokens.publicKeys[0].key=k.pem", `kid "" is taken by secrets.keys.tokenSecret`},
		{"public key kid twice", "gateway.tokens.secretID=a,gateway.tokens.publicKeys[0].kid=a,gateway.tokens.publicKeys[0].key=k.pem", `kid "a" is taken`},
		{"kid the flag cannot carry", "gateway.tokens.publicKeys[0].kid=a b,gateway.tokens.publicKeys[0].key=k.pem", "/gateway/tokens/publicKeys/0/kid"},
		{"credentials in the jwks url", "gateway.tokens.jwksURL=https://u:p@idp.example.com/jwks", "/gateway/tokens/jwksURL"},
		{"jwks url not http", "gateway.tokens.jwksURL=file:///etc/jwks", "/gateway/tokens/jwksURL"},
		{"inline token key", "secrets.keys.tokenKeys.k1=hunter2", "tokenKeys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := tryRun(nil, helmBin(t), "template", "gamerelay", chartDir, "--set", tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("helm template --set %s: want an error containing %q, got %v\n%.300s", tc.set, tc.want, err, out)
			}
		})
	}
}

// The drain arithmetic follows the values: the grace period is derived from
// preStop sleep + drain, and an explicit one is kept.
func TestGatewayGracePeriodFollowsDrain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		set  string
		want int64
	}{
		{"gateway.drainTimeoutSeconds=20,gateway.preStopSleepSeconds=10", 40},
		{"gateway.drainTimeoutSeconds=60,gateway.preStopSleepSeconds=5", 75},
		{"gateway.terminationGracePeriodSeconds=120", 120},
	} {
		objs, err := decodeStrict(render(t, "--set", tc.set, "--show-only", "templates/gateway-deployment.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		d := all[*appsv1.Deployment](objs)[0]
		if got := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; got != tc.want {
			t.Errorf("--set %s: terminationGracePeriodSeconds %d, want %d", tc.set, got, tc.want)
		}
		drain, _ := env(d.Spec.Template.Spec.Containers[0], "GAMERELAY_DRAIN_TIMEOUT")
		if want := fmt.Sprintf("%ds", mustAtoi(t, regexp.MustCompile(`drainTimeoutSeconds=(\d+)`).FindStringSubmatch(tc.set+",drainTimeoutSeconds=20"))); drain != want {
			t.Errorf("--set %s: GAMERELAY_DRAIN_TIMEOUT=%q, want %q", tc.set, drain, want)
		}
	}
}

func mustAtoi(t *testing.T, m []string) int {
	t.Helper()
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
