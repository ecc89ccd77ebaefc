//go:build faults

package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// result is one scenario's verdict and figures.
type result struct {
	name, about string
	verdict     string // pass, FAIL, not run
	failures    []string
	notes       []string // worth knowing, not a failure

	lost, lostGivenUp, dup          int
	differ, logProblems             int
	archiveMissing, archiveProblems int
	catchUp, archive, duration      time.Duration
	st                              stats
}

func (r *result) fail(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *result) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// report is the Markdown summary, rewritten after every scenario into the
// run directory and, if set, $FAULTS_REPORT.
type report struct {
	dir  string
	path string
	rows []*result
}

func newReport(dir string) *report {
	return &report{dir: dir, path: os.Getenv("FAULTS_REPORT")}
}

func (rp *report) write(elapsed time.Duration) {
	md := []byte(rp.markdown(elapsed))
	_ = os.WriteFile(filepath.Join(rp.dir, "report.md"), md, 0o644)
	if rp.path != "" {
		_ = os.MkdirAll(filepath.Dir(rp.path), 0o755)
		_ = os.WriteFile(rp.path, md, 0o644)
	}
}

func (rp *report) markdown(elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Fault suite\n\n%d games × %d players, %d NATS nodes (R%d, %d partitions), %d sequencers, %d gateways, 1 archiver, FerretDB; %s total.\n\n",
		numGames, playersPerGame, natsNodes, replicas, partitions, sequencers, gateways, elapsed.Round(time.Second))
	b.WriteString("Longest stall: the longest a player waited from first sending a message until it came back (or until it gave up on it), resumes included.\n\n")
	b.WriteString("| scenario | verdict | lost | dup | order / delivery | archive | longest stall | unavailable | resends (after error / resume) | resumes | given up | sent | catch-up | archive caught up | time |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rp.rows {
		if r.verdict == "not run" || r.verdict == "skipped" {
			fmt.Fprintf(&b, "| %s | %s | | | | | | | | | | | | | |\n", r.name, r.verdict)
			continue
		}
		st := r.st
		lost := fmt.Sprint(r.lost)
		if r.lostGivenUp > 0 {
			lost += fmt.Sprintf(" (%d given up)", r.lostGivenUp)
		}
		arch := "ok"
		if r.archiveMissing > 0 || r.archiveProblems > 0 {
			arch = fmt.Sprintf("%d missing, %d wrong", r.archiveMissing, r.archiveProblems)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d violations, %d differ, %d log | %s | %v | %d | %d (%d / %d) | %d | %d | %d | %v | %v | %v |\n",
			r.name, r.verdict, lost, r.dup, len(st.violations), r.differ, r.logProblems, arch,
			st.maxStall.Round(100*time.Millisecond), st.unavailable, st.resends, st.resendsAfterErr, st.resendsAfterResume,
			st.resumes, st.gaveUp, st.sent, r.catchUp.Round(100*time.Millisecond), r.archive.Round(100*time.Millisecond),
			r.duration.Round(time.Second))
	}
	b.WriteString("\n")
	for _, r := range rp.rows {
		if r.verdict == "not run" && len(r.failures) == 0 {
			continue // filtered out by -run
		}
		fmt.Fprintf(&b, "## %s: %s\n\n%s.", r.name, r.verdict, r.about)
		if r.st.maxStallWhat != "" {
			fmt.Fprintf(&b, " Longest stall %v: %s.", r.st.maxStall.Round(time.Millisecond), r.st.maxStallWhat)
		}
		if len(r.st.closes) > 0 {
			fmt.Fprintf(&b, " Connections ended: %s.", counts(r.st.closes))
		}
		if len(r.st.joinErrors) > 0 {
			fmt.Fprintf(&b, " Joins refused: %s.", counts(r.st.joinErrors))
		}
		if r.st.dialFails > 0 || r.st.rescues > 0 || r.st.lateBack > 0 || r.st.lateErrors > 0 {
			fmt.Fprintf(&b, " Failed dials %d, rescues %d, given up but stored %d, unavailable for a resend whose first send had come back %d.",
				r.st.dialFails, r.st.rescues, r.st.lateBack, r.st.lateErrors)
		}
		b.WriteString("\n\n")
		for _, f := range r.failures {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", "\n  "))
		}
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- note: %s\n", n)
		}
		if len(r.failures)+len(r.notes) > 0 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

func counts(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(out, ", ")
}
