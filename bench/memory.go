package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// measureMemory runs each system's memory measurement in a child process of this binary, so
// that one system's heap and leftovers never count against the other.
func (b *bench) measureMemory(ctx context.Context, syss []system, keys int) []memResult {
	exe, err := os.Executable()
	var out []memResult
	for _, sys := range syss {
		m := memResult{System: sys.name, Keys: keys}
		if err == nil {
			cmd := exec.CommandContext(ctx, exe, "-mem-child", sys.name, "-mem-keys", strconv.Itoa(keys), "-profile-dir", b.profileDir,
				"-log-store", logStore.String())
			cmd.Stderr = os.Stderr
			var stdout []byte
			if stdout, err = cmd.Output(); err == nil {
				err = json.Unmarshal(stdout, &m)
			}
		}
		if err != nil {
			m.Err = err.Error()
		}
		b.progress("mem %s: %s", sys.name, memLine(m))
		out = append(out, m)
	}
	return out
}

// memChild is the child's side: one member with the system's defaults, keys 16-byte keys with
// distinct 256-byte values written from 64 clients, heap measured after a GC before and after.
// With a profile dir it also writes a heap profile there once the keys are loaded.
func memChild(name string, keys int, profileDir string) error {
	var sys system
	for _, s := range systems {
		if s.name == name {
			sys = s
		}
	}
	if sys.start == nil {
		return fmt.Errorf("unknown system %q", name)
	}
	root, err := os.MkdirTemp("", "ember-bench-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cl, err := sys.start(ctx, 1, root)
	if err != nil {
		return err
	}
	defer cl.close()
	c := cl.client(false)
	m := memResult{System: name, Keys: keys}
	m.HeapBefore, m.LiveBefore, m.RSSBefore = heapNow()
	t0 := time.Now()
	var next atomic.Int64
	errs := make(chan error, 64)
	for range 64 {
		go func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= keys {
					errs <- nil
					return
				}
				k := key("mem-", i)
				if _, err := c.put(ctx, k, k+value[len(k):]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 64 {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return err
	}
	m.LoadSecs = time.Since(t0).Seconds()
	// Let background work triggered by the load (batched commits, snapshots) finish.
	time.Sleep(2 * time.Second)
	m.HeapAfter, m.LiveAfter, m.RSSAfter = heapNow()
	if profileDir != "" {
		if err := writeHeapProfile(filepath.Join(profileDir, "mem-"+name+"-heap.prof")); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(m)
}

// heapNow returns the heap in use, the live heap and the resident set size, after a full GC.
func heapNow() (inuse, live, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.HeapAlloc, residentBytes()
}

func residentBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
