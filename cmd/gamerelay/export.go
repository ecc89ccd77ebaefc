package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gamerelay/gamerelay/archiver"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/internal/wire"
)

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("export", "Writes one archived game in msg_id order: as JSON lines (jsonl: each line\nthe frame clients received) or as CSV (msg_id,ts,client_id,user,type,body).", stderr)
	var (
		mf         mongoFlags
		game, form string
		out        string
	)
	mf.register(fs)
	fs.StringVar(&game, "game", "", "game id (required)")
	fs.StringVar(&form, "format", "jsonl", "jsonl or csv")
	fs.StringVar(&out, "out", "-", "output file (written whole or not at all); - is standard output")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := mf.resolve(fs); err != nil {
		return err
	}
	if err := wire.ValidateGame(game); err != nil {
		return usageError{fmt.Errorf("--game: %w", err)}
	}
	if form != "jsonl" && form != "csv" {
		return usageError{fmt.Errorf("--format %q: want jsonl or csv", form)}
	}
	client, err := mf.connect("gamerelay-export")
	if err != nil {
		return err
	}
	defer disconnect(client)

	w, commit, abort, err := openOutput(out, stdout)
	if err != nil {
		return err
	}
	defer abort()
	n, gaps, err := export(ctx, archiver.NewArchive(client, mf.db), game, form, w)
	if err != nil {
		return err
	}
	if err := commit(); err != nil {
		return err
	}
	if gaps > 0 {
		fmt.Fprintf(stderr, "gamerelay export: warning: game %s has %d msg_id(s) missing from the archive\n", game, gaps)
	}
	fmt.Fprintf(stderr, "gamerelay export: %d messages of game %s\n", n, game)
	return nil
}

// export writes every archived message of game to w and returns how many
// it wrote and how many msg_ids between 1 and the last were missing.
func export(ctx context.Context, a *archiver.Archive, game, form string, w io.Writer) (n int, gaps uint64, err error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var cw *csv.Writer
	if form == "csv" {
		cw = csv.NewWriter(bw)
		_ = cw.Write([]string{"msg_id", "ts", "client_id", "user", "type", "body"})
	}
	var last uint64
	var line bytes.Buffer
	err = a.Messages(ctx, game, 0, 0, func(r archiver.Record) error {
		gaps += r.MsgID - last - 1
		last = r.MsgID
		n++
		if cw != nil {
			return cw.Write([]string{strconv.FormatUint(r.MsgID, 10), r.TS.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
				r.ClientID, r.User, r.Type, string(r.Frame)})
		}
		frame := r.Frame
		if bytes.ContainsAny(frame, "\r\n") {
			// Whitespace between tokens only: one frame, one line.
			line.Reset()
			if err := json.Compact(&line, frame); err != nil {
				return fmt.Errorf("msg_id %d: %w", r.MsgID, err)
			}
			frame = line.Bytes()
		}
		if _, err := bw.Write(frame); err != nil {
			return err
		}
		return bw.WriteByte('\n')
	})
	if err != nil {
		return n, gaps, err
	}
	if n == 0 {
		return 0, 0, fmt.Errorf("%w: %s", archiver.ErrUnknownGame, game)
	}
	if cw != nil {
		cw.Flush()
		if err := cw.Error(); err != nil {
			return n, gaps, err
		}
	}
	return n, gaps, bw.Flush()
}

// openOutput returns where to write: standard output for "-", else a
// temporary file beside path that commit renames onto path (so a failed
// export leaves no partial file) and abort removes.
func openOutput(path string, stdout io.Writer) (w io.Writer, commit func() error, abort func(), err error) {
	if path == "-" {
		return stdout, func() error { return nil }, func() {}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, nil, nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, nil, nil, err
	}
	done := false
	commit = func() error {
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(f.Name(), path); err != nil {
			return err
		}
		done = true
		return nil
	}
	abort = func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}
	return f, commit, abort, nil
}
