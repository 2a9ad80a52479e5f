package ctl

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/internal/progress"
)

type schedCmd struct{}

func (schedCmd) Help() string {
	return `Shows the schedulers (sched.stats): runs in progress, sequences holding a KV cache and its bytes, and per lane (a model under one plan's threads and scheduler settings) its mode and policy, queue, batch counters, decode steps by batch size, and the finished sequences' KV caches it keeps for the next ones (idle caches, reused for the longest common prompt prefix). --json prints sched.stats as JSON.`
}

func (schedCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.SchedStats(e.ctx)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(st)
	}
	printSched(e.stdout, st)
	return nil
}

func printSched(w io.Writer, st *engine.SchedStats) {
	fmt.Fprintf(w, "runs in progress %d, sequences with a KV cache %d (%s), event subscribers %d\n",
		st.RunsInProgress, st.ActiveSequences, progress.Bytes(st.KVBytes), st.Subscribers)
	if st.RecordError != "" {
		fmt.Fprintf(w, "last run-record write failure: %s\n", st.RecordError)
	}
	if len(st.Lanes) == 0 {
		fmt.Fprintln(w, "no lanes (no run yet)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tTHREADS\tMODE/POLICY\tMAX BATCH\tQUEUED\tACTIVE\tMAX ACTIVE\tCOMPLETED\tCANCELLED\tREJECTED\tSTEPS (by size)\tIDLE CACHES")
	for _, l := range st.Lanes {
		sizes := make([]int, 0, len(l.StepsBySize))
		for s := range l.StepsBySize {
			sizes = append(sizes, s)
		}
		slices.Sort(sizes)
		parts := make([]string, len(sizes))
		for i, s := range sizes {
			parts[i] = fmt.Sprintf("%d×%d", s, l.StepsBySize[s])
		}
		by := strings.Join(parts, " ")
		if by == "" {
			by = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s/%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d (%s)\t%d (%s)\n", l.ModelID, l.Threads, l.Mode, l.Policy, l.MaxBatch,
			l.Queued, l.Active, l.MaxActive, l.Completed, l.Cancelled, l.Rejected, l.Steps, by, l.IdleStates, progress.Bytes(l.IdleKVBytes))
	}
	tw.Flush()
}
