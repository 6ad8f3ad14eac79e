package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// cellKey identifies a cell across systems, so that ember's and etcd's figures share a row.
type cellKey struct {
	workload string
	members  int
	at       string
	clients  int
}

func keyOf(r result) cellKey { return cellKey{r.Workload, r.Members, r.At, r.Clients} }

// printTables writes the comparison as Markdown: ember and etcd side by side per cell, the raw
// raft ceiling next to ember's puts, and memory per key.
func printTables(w io.Writer, results []result, mem []memResult) {
	var order []cellKey
	seen := map[cellKey]bool{}
	bySys := map[string]map[cellKey]result{}
	for _, r := range results {
		k := keyOf(r)
		if bySys[r.System] == nil {
			bySys[r.System] = map[cellKey]result{}
		}
		bySys[r.System][k] = r
		if r.System != "raft" && !seen[k] {
			seen[k] = true
			order = append(order, k)
		}
	}
	if len(order) > 0 {
		fmt.Fprintln(w, "| workload | members | at | clients | ember ops/s | etcd ops/s | ember/etcd ops | ember p50 / p99 | etcd p50 / p99 | etcd/ember p50 | ember CPU | etcd CPU | notes |")
		fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, k := range order {
			e, eok := bySys["ember"][k]
			d, dok := bySys["etcd"][k]
			both := eok && dok && e.Err == "" && d.Err == ""
			fmt.Fprintf(w, "| %s | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				k.workload, k.members, k.at, k.clients,
				opsCell(e, eok), opsCell(d, dok), ratio(e.opsPerSec(), d.opsPerSec(), both),
				latCell(e, eok), latCell(d, dok), ratio(d.P50.Seconds(), e.P50.Seconds(), both),
				cpuCell(e, eok), cpuCell(d, dok), notes(e, eok, d, dok))
		}
		fmt.Fprintln(w)
	}
	if raw := bySys["raft"]; len(raw) > 0 {
		fmt.Fprintln(w, "| raw raft (no-op FSM) | clients | raft ops/s | p50 / p99 | CPU | ember put ops/s, leader | ember/raft |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
		for _, r := range results {
			if r.System != "raft" {
				continue
			}
			e, eok := bySys["ember"][cellKey{"put", r.Members, r.At, r.Clients}]
			fmt.Fprintf(w, "| %d members | %d | %s | %s | %s | %s | %s |\n", r.Members, r.Clients,
				opsCell(r, true), latCell(r, true), cpuCell(r, true), opsCell(e, eok), ratio(e.opsPerSec(), r.opsPerSec(), eok && r.Err == ""))
		}
		fmt.Fprintln(w)
	}
	if len(mem) > 0 {
		fmt.Fprintln(w, "| memory, 1 member | keys | heap in use / key | live heap / key | RSS / key | load time |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
		for _, m := range mem {
			fmt.Fprintf(w, "| %s | %s |\n", m.System, memLine(m))
		}
		if len(mem) == 2 && mem[0].Err == "" && mem[1].Err == "" {
			fmt.Fprintf(w, "| %s/%s | | %s | %s | %s | |\n", mem[0].System, mem[1].System,
				ratio(perKey(mem[0].HeapBefore, mem[0].HeapAfter, mem[0].Keys), perKey(mem[1].HeapBefore, mem[1].HeapAfter, mem[1].Keys), true),
				ratio(perKey(mem[0].LiveBefore, mem[0].LiveAfter, mem[0].Keys), perKey(mem[1].LiveBefore, mem[1].LiveAfter, mem[1].Keys), true),
				ratio(perKey(mem[0].RSSBefore, mem[0].RSSAfter, mem[0].Keys), perKey(mem[1].RSSBefore, mem[1].RSSAfter, mem[1].Keys), true))
		}
		fmt.Fprintln(w)
	}
}

func memLine(m memResult) string {
	if m.Err != "" {
		return "error: " + m.Err
	}
	return fmt.Sprintf("%d | %.0f B | %.0f B | %.0f B | %.1f s", m.Keys,
		perKey(m.HeapBefore, m.HeapAfter, m.Keys), perKey(m.LiveBefore, m.LiveAfter, m.Keys),
		perKey(m.RSSBefore, m.RSSAfter, m.Keys), m.LoadSecs)
}

func opsCell(r result, ok bool) string {
	switch {
	case !ok:
		return "—"
	case r.Err != "":
		return "error"
	}
	return thousands(r.opsPerSec())
}

func latCell(r result, ok bool) string {
	if !ok || r.Err != "" {
		return "—"
	}
	return dur(r.P50) + " / " + dur(r.P99)
}

func cpuCell(r result, ok bool) string {
	if !ok || r.Err != "" {
		return "—"
	}
	return fmt.Sprintf("%.2f cores, %s/op", r.cores(), dur(r.cpuPerOp()))
}

func notes(e result, eok bool, d result, dok bool) string {
	var parts []string
	for _, x := range []struct {
		r  result
		ok bool
	}{{e, eok}, {d, dok}} {
		switch {
		case !x.ok:
		case x.r.Err != "":
			parts = append(parts, x.r.System+" error: "+x.r.Err)
		case x.r.Notes != "":
			parts = append(parts, x.r.System+": "+x.r.Notes)
		}
	}
	return strings.ReplaceAll(strings.Join(parts, "; "), "|", "/")
}

// ratio is a/b, or a dash when either side is missing.
func ratio(a, b float64, ok bool) string {
	if !ok || b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func dur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func thousands(f float64) string {
	s := fmt.Sprintf("%.0f", f)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
