// Command gamerelay is the one binary of gamerelay; each role is a
// subcommand. main parses flags and environment, builds the component,
// runs it until SIGINT/SIGTERM and maps its error to the exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/gamerelay/gamerelay/internal/cli"
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"sequencer": {"run the sequencer service: numbers and appends game messages", runSequencer},
	"dev":       {"run the whole system in one process on embedded NATS JetStream", runDev},
	"gateway":   {"run a WebSocket gateway for players and spectators", runGateway},
	"token":     {"mint a player or spectator token for a game", runToken},
	"bench":     {"load generator that verifies order, and the bare reference relay", runBench},
	"archiver":  {"copy the game log into MongoDB and serve archived history", runArchiver},
	"export":    {"write one archived game as JSON lines or CSV", runExport},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: gamerelay <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'gamerelay <command> --help' for its flags.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "gamerelay: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "gamerelay %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "gamerelay %s: %v\n", args[0], err)
		return 1
	}
}

// usageError is a bad flag or configuration: exit code 2.
type usageError struct{ error }

// parseFlags parses a subcommand's flags and their environment twins:
// --help comes back as flag.ErrHelp (exit 0), any other problem as a
// usageError (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}

// newLogger builds the process logger: JSON by default (production), text
// for humans.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want json or text", format)}
}
