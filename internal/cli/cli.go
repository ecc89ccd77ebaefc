// Package cli gives every gamerelay subcommand the same flag handling: each
// flag has a GAMERELAY_* environment twin (flag name upper-cased, '-' → '_'),
// a command-line flag wins over the environment, and --help prints both.
package cli

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvName returns the environment twin of a flag name.
func EnvName(flagName string) string {
	return "GAMERELAY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// NewFlagSet returns a flag set whose usage lists the environment twins.
func NewFlagSet(name, summary string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: gamerelay %s [flags]\n\n%s\n\nFlags (each also read from its environment variable):\n", name, summary)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(out, "  --%s  [$%s]\n        %s%s\n", f.Name, EnvName(f.Name), f.Usage, def)
		})
	}
	return fs
}

// Parse parses args, then fills every flag not given on the command line
// from its environment twin. A flag filled either way counts as set
// (fs.Visit visits it; see IsSet).
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("$%s: %w", EnvName(f.Name), e)
			}
		}
	})
	return err
}

// IsSet reports whether the flag name was given, on the command line or
// by its environment twin; call it after Parse.
func IsSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// SecretFile reads the file named by the flag fileFlag, the twin of the
// flag name that keeps a secret out of argv and the environment: a
// Kubernetes Secret mounted as a file, say. It returns the file's content
// with surrounding whitespace trimmed, and false if fileFlag is not set.
// A missing or empty file, or name set too, is an error; errors name the
// flags and the path, never the content.
func SecretFile(fs *flag.FlagSet, name, fileFlag string) (string, bool, error) {
	f := fs.Lookup(fileFlag)
	if f == nil || f.Value.String() == "" {
		return "", false, nil
	}
	path := f.Value.String()
	if IsSet(fs, name) {
		return "", false, fmt.Errorf("--%s and --%s both set ($%s, $%s): use one", name, fileFlag, EnvName(name), EnvName(fileFlag))
	}
	s, err := ReadSecret(fileFlag, path)
	if err != nil {
		return "", false, err
	}
	return s, true, nil
}

// ReadSecret returns the content of the file at path, the value of the
// flag fileFlag, with surrounding whitespace trimmed. A missing or empty
// file is an error naming the flag and the path, never the content.
func ReadSecret(fileFlag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", fileFlag, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("--%s: %s is empty", fileFlag, path)
	}
	return s, nil
}

// Repeated is a flag that may be given several times; from the environment
// it takes a comma-separated list.
type Repeated []string

func (r *Repeated) String() string { return strings.Join(*r, ",") }

// Set appends v (split on commas).
func (r *Repeated) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*r = append(*r, s)
		}
	}
	return nil
}
