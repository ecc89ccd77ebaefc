package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"no credentials":     {"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		"empty":              {"", ""},
		"user and password":  {"nats://gw:PASSWORD@nats:4222", "nats://gw:xxxxx@nats:4222"},
		"token":              {"nats://s3cr3tT0ken@nats:4222", "nats://xxxxx@nats:4222"},
		"user, empty secret": {"nats://gw:@nats", "nats://gw:xxxxx@nats"},
		"empty user info":    {"nats://@nats", "nats://xxxxx@nats"},
		"tls scheme":         {"tls://gw:pw@nats:4222", "tls://gw:xxxxx@nats:4222"},
		"websocket":          {"wss://gw:pw@nats:443/path", "wss://gw:xxxxx@nats:443/path"},
		"nats list":          {"nats://gw:pw1@n0:4222,nats://gw:pw2@n1:4222, nats://n2:4222", "nats://gw:xxxxx@n0:4222,nats://gw:xxxxx@n1:4222, nats://n2:4222"},
		"list of tokens":     {"nats://tok1@n0,nats://tok2@n1", "nats://xxxxx@n0,nats://xxxxx@n1"},
		// Without a scheme, what lies between two '@' is hidden whole.
		"list without scheme":  {"gw:pw@n0:4222,gw:pw2@n1:4222", "gw:xxxxx@n0:xxxxx@n1:4222"},
		"scheme on first only": {"nats://n0:4222,gw:pw@n1:4222", "nats://n0:xxxxx@n1:4222"},
		"mongodb hosts":        {"mongodb://archiver:PW@mongo-0:27017,mongo-1:27017,mongo-2/gamerelay?replicaSet=rs0&w=majority", "mongodb://archiver:xxxxx@mongo-0:27017,mongo-1:27017,mongo-2/gamerelay?replicaSet=rs0&w=majority"},
		"mongodb+srv":          {"mongodb+srv://gamerelay:PW@cluster0.example.mongodb.net/?retryWrites=true", "mongodb+srv://gamerelay:xxxxx@cluster0.example.mongodb.net/?retryWrites=true"},
		"mongodb user only":    {"mongodb://CN=archiver@mongo/?authMechanism=MONGODB-X509", "mongodb://xxxxx@mongo/?authMechanism=MONGODB-X509"},
		"escaped password":     {"mongodb://u:p%40ss%2Fw@h/", "mongodb://u:xxxxx@h/"},
		"unescaped @":          {"mongodb://u:p@ss@h/", "mongodb://u:xxxxx@xxxxx@h/"},
		"unescaped comma":      {"mongodb://u:pa,ss@h1,h2/", "mongodb://u:xxxxx@h1,h2/"},
		"unescaped slash":      {"nats://u:pa/ss@h", "nats://u:xxxxx@h"},
		"unescaped colon":      {"mongodb://u:pa:ss@h/", "mongodb://u:xxxxx@h/"},
		"quoted in an error":   {`parse "nats://u:pw@h:x": invalid port ":x" after host`, `parse "nats://u:xxxxx@h:x": invalid port ":x" after host`},
		"error without URL":    {"dial tcp 127.0.0.1:4222: connect: connection refused", "dial tcp 127.0.0.1:4222: connect: connection refused"},
	} {
		t.Run(name, func(t *testing.T) {
			got := redactURL(tc.in)
			if got != tc.want {
				t.Fatalf("redactURL(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			for _, secret := range []string{"PASSWORD", "PW", "pw1", "pw2", "s3cr3tT0ken", "tok1", "tok2", "p%40ss", "pa,ss", "pa/ss", "pa:ss", "ss@"} {
				if strings.Contains(tc.in, secret) && strings.Contains(got, secret) {
					t.Fatalf("redactURL(%q) = %q still holds %q", tc.in, got, secret)
				}
			}
		})
	}
}

// No error a role returns about its NATS or MongoDB URL quotes a
// password or token.
func TestCredentialsNotInErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for name, tc := range map[string]struct {
		run  func(context.Context, []string, io.Writer, io.Writer) error
		args []string
		want string // in the error
	}{
		"nats unreachable": {runSequencer, []string{"--nats", "nats://gw:PASSWORD@127.0.0.1:1,nats://TOKEN@127.0.0.1:2"}, "nats://gw:xxxxx@127.0.0.1:1,nats://xxxxx@127.0.0.1:2: not reachable"},
		"nats malformed":   {runSequencer, []string{"--nats", "nats://gw:PASS/WORD@127.0.0.1:4222"}, "--nats: nats://gw:xxxxx@127.0.0.1:4222 is not a valid URL"},
		"gateway":          {runGateway, []string{"--allow-anonymous", "--nats", "nats://gw:PASSWORD@127.0.0.1:1"}, "nats://gw:xxxxx@127.0.0.1:1: not reachable"},
		"mongo bad option": {runExport, []string{"--game", "g", "--mongo", "mongodb://a:PASSWORD@h1,h2/?connect=bogus"}, "--mongo mongodb://a:xxxxx@h1,h2/"},
		"mongo bad escape": {runArchiver, []string{"--mongo", "mongodb://a:PASS%zzWORD@h1/"}, "invalid percent-escape"},
		"mongo @ in pw":    {runExport, []string{"--game", "g", "--mongo", "mongodb://a:PASS@WORD@h1/"}, "mongodb://a:xxxxx@xxxxx@h1/"},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			err := tc.run(cancelled, tc.args, &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			for _, s := range []string{"PASS", "WORD", "TOKEN", "zz"} {
				if strings.Contains(err.Error(), s) || strings.Contains(out.String(), s) {
					t.Fatalf("%q leaked: error %v, output %s", s, err, out.String())
				}
			}
		})
	}
}
