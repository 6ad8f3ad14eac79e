package main

import "time"

// result is one cell: one system, workload, member count, client placement and client count.
type result struct {
	System     string        `json:"system"`
	Workload   string        `json:"workload"`
	Members    int           `json:"members"`
	At         string        `json:"at"`
	Clients    int           `json:"clients"`
	Ops        int64         `json:"ops"`
	Seconds    float64       `json:"seconds"`
	CPUSeconds float64       `json:"cpu_seconds"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	// Watch cells only.
	MaxLag    int64 `json:"max_lag_revs,omitempty"`
	LagAtStop int64 `json:"lag_at_stop_revs,omitempty"`
	Delivered bool  `json:"all_delivered_in_order,omitempty"`

	Notes string `json:"notes,omitempty"`
	Err   string `json:"error,omitempty"`
}

func (r result) opsPerSec() float64 {
	if r.Seconds == 0 {
		return 0
	}
	return float64(r.Ops) / r.Seconds
}

// cores is the CPU the whole process used during the cell, in cores.
func (r result) cores() float64 {
	if r.Seconds == 0 {
		return 0
	}
	return r.CPUSeconds / r.Seconds
}

func (r result) cpuPerOp() time.Duration {
	if r.Ops == 0 {
		return 0
	}
	return time.Duration(r.CPUSeconds / float64(r.Ops) * float64(time.Second))
}

// memResult is the memory one system needs per live key, measured in a child process.
type memResult struct {
	System     string  `json:"system"`
	Keys       int     `json:"keys"`
	HeapBefore uint64  `json:"heap_inuse_before"`
	HeapAfter  uint64  `json:"heap_inuse_after"`
	LiveBefore uint64  `json:"heap_live_before"`
	LiveAfter  uint64  `json:"heap_live_after"`
	RSSBefore  uint64  `json:"rss_before"`
	RSSAfter   uint64  `json:"rss_after"`
	LoadSecs   float64 `json:"load_seconds"`
	Err        string  `json:"error,omitempty"`
}

func perKey(before, after uint64, keys int) float64 {
	return (float64(after) - float64(before)) / float64(keys)
}
