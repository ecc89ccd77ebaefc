package cli

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnvTwinCountsAsSet(t *testing.T) {
	t.Setenv("GAMERELAY_FROM_ENV", "e")
	fs := NewFlagSet("t", "", io.Discard)
	fs.String("from-env", "d", "")
	fs.String("from-args", "d", "")
	fs.String("unset", "d", "")
	if err := Parse(fs, []string{"--from-args", "a"}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"from-env": true, "from-args": true, "unset": false} {
		if got := IsSet(fs, name); got != want {
			t.Errorf("IsSet(%s) = %v, want %v", name, got, want)
		}
	}
	if v := fs.Lookup("from-env").Value.String(); v != "e" {
		t.Errorf("from-env = %q", v)
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "  s3cret-value\n\n")
	empty := write("empty", " \n\t\n")
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		want string // the value; "" for none
		err  string // in the error
	}{
		"not set":          {},
		"file":             {args: []string{"--secret-file", good}, want: "s3cret-value"},
		"file by env":      {env: map[string]string{"GAMERELAY_SECRET_FILE": good}, want: "s3cret-value"},
		"missing file":     {args: []string{"--secret-file", filepath.Join(dir, "nope")}, err: "--secret-file: open " + filepath.Join(dir, "nope")},
		"empty file":       {args: []string{"--secret-file", empty}, err: "--secret-file: " + empty + " is empty"},
		"both":             {args: []string{"--secret", "x", "--secret-file", good}, err: "--secret and --secret-file both set"},
		"flag, file's env": {args: []string{"--secret", "x"}, env: map[string]string{"GAMERELAY_SECRET_FILE": good}, err: "both set"},
		"env, file":        {args: []string{"--secret-file", good}, env: map[string]string{"GAMERELAY_SECRET": "x"}, err: "both set"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := NewFlagSet("t", "", io.Discard)
			fs.String("secret", "", "")
			fs.String("secret-file", "", "")
			if err := Parse(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			got, ok, err := SecretFile(fs, "secret", "secret-file")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("error quotes the content: %v", err)
				}
				return
			}
			if err != nil || got != tc.want || ok != (tc.want != "") {
				t.Fatalf("SecretFile = %q, %v, %v; want %q", got, ok, err, tc.want)
			}
		})
	}
}

// Repeated splits on commas and accumulates.
func TestRepeated(t *testing.T) {
	var r Repeated
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(&r, "x", "")
	if err := fs.Parse([]string{"--x", "a, b", "--x", "c"}); err != nil {
		t.Fatal(err)
	}
	if r.String() != "a,b,c" {
		t.Fatalf("%q", r.String())
	}
}
