package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The -file twins of the secret flags: a missing or empty file, or a flag
// given with its twin, is a usage error naming the flag, never the
// content.
func TestSecretFileFlags(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := file("secret", "SECRET-0123456789abcdef\n")
	empty := file("empty", "\n \n")
	comments := file("comments", "# only a comment\n\n")
	badKeys := file("bad-keys", "# keys\nstudio=KEY-0123456789abcdef\nKEY-WITHOUT-OWNER\n")
	missing := filepath.Join(dir, "missing")
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		out  string
	}{
		"token secret twice":     {[]string{"gateway", "--token-secret", "SECRET-0123456789abcdef", "--token-secret-file", secret}, nil, "--token-secret and --token-secret-file both set"},
		"token secret env twice": {[]string{"gateway", "--token-secret-file", secret}, map[string]string{"GAMERELAY_TOKEN_SECRET": "SECRET-0123456789abcdef"}, "both set"},
		"token secret missing":   {[]string{"gateway", "--token-secret-file", missing}, nil, "--token-secret-file: open " + missing},
		"token secret empty":     {[]string{"dev", "--token-secret-file", empty}, nil, "--token-secret-file: " + empty + " is empty"},
		"token cmd, file":        {[]string{"token", "--token-secret-file", empty, "--game", "g"}, nil, "is empty"},
		"api keys twice":         {[]string{"gateway", "--allow-anonymous", "--api-key", "a=KEY-0123456789abcdef", "--api-keys-file", badKeys}, nil, "--api-key and --api-keys-file both set"},
		"api keys and env list":  {[]string{"gateway", "--allow-anonymous", "--api-keys-file", badKeys}, map[string]string{"GAMERELAY_API_KEYS": "a=KEY-0123456789abcdef"}, "$GAMERELAY_API_KEYS both set"},
		"api keys bad line":      {[]string{"gateway", "--allow-anonymous", "--api-keys-file", badKeys}, nil, "--api-keys-file " + badKeys + ": entry 2 (not counting blank lines and comments): want NAME=KEY"},
		"api keys no line":       {[]string{"gateway", "--allow-anonymous", "--api-keys-file", comments}, nil, "no NAME=KEY line"},
		"nats url twice":         {[]string{"sequencer", "--nats", "nats://127.0.0.1:1", "--nats-url-file", secret}, nil, "--nats and --nats-url-file both set"},
		"nats url missing":       {[]string{"archiver", "--mongo", "mongodb://h/", "--nats-url-file", missing}, nil, "--nats-url-file: open"},
		"mongo uri twice":        {[]string{"export", "--game", "g", "--mongo", "mongodb://h/", "--mongo-uri-file", secret}, nil, "--mongo and --mongo-uri-file both set"},
		"mongo uri empty":        {[]string{"archiver", "--mongo-uri-file", empty}, nil, "--mongo-uri-file: " + empty + " is empty"},
		"mongo uri env twice":    {[]string{"archiver", "--mongo-uri-file", secret}, map[string]string{"GAMERELAY_MONGO": "mongodb://h/"}, "both set"},
		"no mongo at all":        {[]string{"archiver"}, nil, "--mongo or --mongo-uri-file"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			if code := run(tc.args, &out, &out); code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, out.String())
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Fatalf("output lacks %q:\n%s", tc.out, out.String())
			}
			for _, s := range []string{"SECRET-", "KEY-"} {
				if strings.Contains(out.String(), s) {
					t.Fatalf("output quotes a secret (%s):\n%s", s, out.String())
				}
			}
		})
	}
}
