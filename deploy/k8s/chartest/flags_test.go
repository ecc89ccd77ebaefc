package chartest

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// promisedEnv are environment variables the chart may set before the
// binary reads them (announced flags of roles still being built).
var promisedEnv = map[string]bool{}

// Every GAMERELAY_* variable the chart sets is a flag of the subcommand the
// container runs (`gamerelay <role> --help` lists them), so a renamed flag
// cannot silently fall back to its default in production.
func TestEnvMatchesFlags(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "gamerelay")
	build := exec.Command("go", "build", "-o", bin, "./cmd/gamerelay")
	build.Dir = "../../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gamerelay: %v\n%s", err, out)
	}
	flags := map[string]map[string]bool{}
	envOf := func(role string) map[string]bool {
		if f, ok := flags[role]; ok {
			return f
		}
		out, err := exec.Command(bin, role, "--help").CombinedOutput()
		if err != nil && strings.Contains(string(out), "unknown command") {
			flags[role] = nil
			return nil
		}
		f := map[string]bool{}
		for _, m := range regexp.MustCompile(`\[\$(GAMERELAY_[A-Z0-9_]+)\]`).FindAllStringSubmatch(string(out), -1) {
			f[m[1]] = true
		}
		if len(f) == 0 {
			t.Fatalf("gamerelay %s --help lists no flags:\n%s", role, out)
		}
		flags[role] = f
		return f
	}
	missing := map[string]bool{}
	for _, vs := range valueSets {
		for _, d := range all[*appsv1.Deployment](renderObjects(t, vs)) {
			c := d.Spec.Template.Spec.Containers[0]
			role := c.Args[0]
			known := envOf(role)
			if known == nil {
				if !missing[role] {
					t.Logf("gamerelay has no %q subcommand yet: its environment is not checked", role)
				}
				missing[role] = true
				continue
			}
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "GAMERELAY_") && !known[e.Name] && !promisedEnv[e.Name] {
					t.Errorf("%s (%s): %s is not a flag of `gamerelay %s`", vs.name, d.Name, e.Name, role)
				}
			}
		}
	}
}
