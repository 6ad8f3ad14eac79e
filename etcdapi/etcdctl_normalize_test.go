package etcdapi_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-cmp/cmp"
)

// normalizer rewrites what legitimately differs between two deployments running the same
// command sequence, and nothing else. Revisions, versions, keys, values, counts, TTLs as
// granted and error texts are left alone, so that they must match exactly.
//
// What it rewrites:
//   - the deployment's client address and snapshot file path, as literals;
//   - lease IDs, in the places etcdctl prints them: "lease <id>" texts, the lines of `lease
//     list`, lock and election keys (<name>/<id>), "Lease" fields of -w fields, and "ID" and
//     "lease" fields of -w json. The first lease seen becomes <lease-1>, the next <lease-2>,
//     and so on, so that leases must still appear in the same order;
//   - cluster ID, member ID and raft term in response headers;
//   - the remaining TTL of `lease timetolive` and the duration of `endpoint health`, which
//     depend on timing;
//   - the order of `lease timetolive --keys`, which etcd itself prints in map order;
//   - etcdctl's own JSON log lines on stderr, down to level, message and error.
//
// -w json documents are pretty-printed, so that a mismatch diffs field by field. Member lists,
// endpoint status and snapshot output hold little else than deployment details: their steps
// compare structure instead (see the shape comparers).
type normalizer struct {
	literals map[string]string // deployment-specific text → placeholder
	leases   []int64           // leases[i] is printed as <lease-(i+1)>
}

func newNormalizer() *normalizer {
	return &normalizer{literals: map[string]string{}}
}

// lease returns the placeholder of lease ID id, assigning the next one on first sight.
func (n *normalizer) lease(id int64) string {
	i := slices.Index(n.leases, id)
	if i < 0 {
		n.leases = append(n.leases, id)
		i = len(n.leases) - 1
	}
	return fmt.Sprintf("<lease-%d>", i+1)
}

var leasePlaceholder = regexp.MustCompile(`<lease-(\d+)>`)

// expand is the reverse of lease, for steps whose arguments name a lease: "<lease-2>" becomes
// the second lease this deployment printed, in etcdctl's hex form.
func (n *normalizer) expand(arg string) (string, error) {
	var err error
	out := leasePlaceholder.ReplaceAllStringFunc(arg, func(p string) string {
		i, _ := strconv.Atoi(leasePlaceholder.FindStringSubmatch(p)[1])
		if i < 1 || i > len(n.leases) {
			err = fmt.Errorf("%s: only %d leases seen so far", p, len(n.leases))
			return p
		}
		return strconv.FormatInt(n.leases[i-1], 16)
	})
	return out, err
}

var (
	leaseText    = regexp.MustCompile(`\blease ([0-9a-f]{16})\b`)
	leaseList    = regexp.MustCompile(`(?m)^found \d+ leases\n(?:[0-9a-f]{16}\n)*`)
	leaseKey     = regexp.MustCompile(`\b(mylock|myelection)/([0-9a-f]+)\b`)
	leaseField   = regexp.MustCompile(`(?m)^"Lease" : (\d+)$`)
	headerFields = regexp.MustCompile(`(?m)^"(ClusterID|MemberID|RaftTerm)" : \d+$`)
	remaining    = regexp.MustCompile(`remaining\(-?\d+s\)`)
	took         = regexp.MustCompile(`took = \S+`)
	logLine      = regexp.MustCompile(`(?m)^\{"level":.*\}$`)
	attached     = regexp.MustCompile(`attached keys\(\[([^\]]*)\]\)`)
)

// text normalizes one output stream of etcdctl.
func (n *normalizer) text(s string) string {
	for _, lit := range slices.Sorted(maps.Keys(n.literals)) {
		s = strings.ReplaceAll(s, lit, n.literals[lit])
	}
	hexLease := func(h string) string {
		id, err := strconv.ParseUint(h, 16, 64)
		if err != nil {
			return h
		}
		return n.lease(int64(id))
	}
	var out []string
	for _, block := range splitKeepingLeaseLists(s) {
		if leaseList.MatchString(block) {
			lines := strings.Split(block, "\n")
			for i := 1; i < len(lines); i++ {
				if lines[i] != "" {
					lines[i] = hexLease(lines[i])
				}
			}
			out = append(out, strings.Join(lines, "\n"))
			continue
		}
		block = leaseText.ReplaceAllStringFunc(block, func(m string) string {
			return "lease " + hexLease(leaseText.FindStringSubmatch(m)[1])
		})
		block = leaseKey.ReplaceAllStringFunc(block, func(m string) string {
			sub := leaseKey.FindStringSubmatch(m)
			return sub[1] + "/" + hexLease(sub[2])
		})
		block = leaseField.ReplaceAllStringFunc(block, func(m string) string {
			id, _ := strconv.ParseInt(leaseField.FindStringSubmatch(m)[1], 10, 64)
			if id == 0 {
				return m
			}
			return `"Lease" : ` + n.lease(id)
		})
		block = headerFields.ReplaceAllString(block, `"$1" : <$1>`)
		block = remaining.ReplaceAllString(block, "remaining(<ttl>s)")
		block = took.ReplaceAllString(block, "took = <duration>")
		block = attached.ReplaceAllStringFunc(block, sortAttachedKeys)
		block = logLine.ReplaceAllStringFunc(block, logSummary)
		out = append(out, n.jsonLines(block))
	}
	return strings.Join(out, "")
}

// logSummary reduces one of etcdctl's own log lines (client retries, snapshot progress) to
// its level, message and error: its other fields are times, local ports, pointers, sizes
// and durations.
func logSummary(line string) string {
	var entry struct{ Level, Msg, Error string }
	if json.Unmarshal([]byte(line), &entry) != nil {
		return line
	}
	s := fmt.Sprintf("log %s: %s", entry.Level, entry.Msg)
	if entry.Error != "" {
		s += ": " + entry.Error
	}
	return s
}

// sortAttachedKeys sorts the keys `lease timetolive --keys` lists: etcd itself lists them in
// map iteration order.
func sortAttachedKeys(m string) string {
	keys := strings.Fields(attached.FindStringSubmatch(m)[1])
	slices.Sort(keys)
	return "attached keys([" + strings.Join(keys, " ") + "])"
}

// splitKeepingLeaseLists cuts s into pieces, each either a whole `lease list` block or text
// between such blocks, in order.
func splitKeepingLeaseLists(s string) []string {
	var parts []string
	for _, loc := range leaseList.FindAllStringIndex(s, -1) {
		parts = append(parts, s[:loc[0]], s[loc[0]:loc[1]])
		s = s[loc[1]:]
	}
	return append(parts, s)
}

// jsonLines normalizes each line that is a JSON document (etcdctl -w json prints one per
// line) and pretty-prints it, so that a mismatch diffs field by field.
func (n *normalizer) jsonLines(s string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, line := range lines {
		v, ok := parseJSON(line)
		if !ok {
			continue
		}
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // keep placeholders readable: <lease-1>, not \u003clease-1\u003e
		enc.SetIndent("", "  ")
		enc.Encode(n.jsonValue(v, nil))
		lines[i] = b.String()
	}
	return strings.Join(lines, "")
}

func parseJSON(line string) (any, bool) {
	t := strings.TrimSpace(line)
	if !strings.HasPrefix(t, "{") && !strings.HasPrefix(t, "[") {
		return nil, false
	}
	d := json.NewDecoder(strings.NewReader(t))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil || d.More() {
		return nil, false
	}
	return v, true
}

// jsonValue rewrites the deployment-specific fields of a -w json document; path is the chain
// of object keys leading to v.
func (n *normalizer) jsonValue(v any, path []string) any {
	switch v := v.(type) {
	case map[string]any:
		// Sorted, so that leases first seen in the same document get placeholders in a
		// deterministic order.
		for _, k := range slices.Sorted(maps.Keys(v)) {
			e := v[k]
			p := append(slices.Clip(path), k)
			switch {
			case k == "cluster_id" || k == "member_id" || k == "raft_term":
				v[k] = "<" + k + ">"
			case k == "lease" || (k == "ID" && len(path) == 0) || (k == "id" && slices.Equal(path, []string{"leases"})):
				if num, ok := e.(json.Number); ok && num != "0" {
					id, _ := num.Int64()
					v[k] = n.lease(id)
				}
			default:
				v[k] = n.jsonValue(e, p)
			}
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = n.jsonValue(e, path)
		}
		return v
	default:
		return v
	}
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

// lineDiff shows how got differs from want, line by line.
func lineDiff(want, got string) string {
	return cmp.Diff(strings.Split(want, "\n"), strings.Split(got, "\n"))
}

// comparer decides whether a step's output on ember is equivalent to etcd's; both are already
// normalized. It returns "" or a description of the difference.
type comparer func(etcd, ember normalized) string

// normalized is a step's result after normalization: exit status, and each stream as text.
type normalized struct {
	exit           int
	stdout, stderr string
}

func (n *normalizer) normalize(r result) normalized {
	return normalized{r.exit, n.text(r.stdout), n.text(r.stderr)}
}

func (r normalized) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%sstderr:\n%s", r.exit, indent(r.stdout), indent(r.stderr))
}

// sameOutput is the default comparer: everything must match.
func sameOutput(etcd, ember normalized) string {
	if etcd.String() == ember.String() {
		return ""
	}
	return "(-etcd +ember):\n" + lineDiff(etcd.String(), ember.String())
}

// sameExitAndStderr is the part every shape comparer checks besides stdout.
func sameExitAndStderr(etcd, ember normalized) string {
	if etcd.exit != ember.exit || etcd.stderr != ember.stderr {
		return fmt.Sprintf("exit status or stderr differ (-etcd +ember):\n%s",
			lineDiff(fmt.Sprintf("exit %d\n%s", etcd.exit, etcd.stderr), fmt.Sprintf("exit %d\n%s", ember.exit, ember.stderr)))
	}
	return ""
}

// tableShape compares etcdctl -w table output: the same header, the same number of rows,
// and the same cells except in the named columns.
func tableShape(variable ...string) comparer {
	return func(etcd, ember normalized) string {
		if d := sameExitAndStderr(etcd, ember); d != "" {
			return d
		}
		a, b := tableRows(etcd.stdout), tableRows(ember.stdout)
		if len(a) == 0 || len(a) != len(b) || !slices.Equal(a[0], b[0]) {
			return "tables differ in header or row count (-etcd +ember):\n" + lineDiff(etcd.stdout, ember.stdout)
		}
		return cellsDiff(a[0], a[1:], b[1:], variable)
	}
}

// tableRows splits a tablewriter table into cells, header first.
func tableRows(s string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

// rowsShape compares etcdctl's simple output of a table, one comma-separated row per line
// without a header, given the header etcdctl would print with -w table.
func rowsShape(header []string, variable ...string) comparer {
	return func(etcd, ember normalized) string {
		if d := sameExitAndStderr(etcd, ember); d != "" {
			return d
		}
		split := func(s string) [][]string {
			var rows [][]string
			for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
				rows = append(rows, strings.Split(line, ", "))
			}
			return rows
		}
		a, b := split(etcd.stdout), split(ember.stdout)
		if len(a) != len(b) {
			return "row counts differ (-etcd +ember):\n" + lineDiff(etcd.stdout, ember.stdout)
		}
		for i := range a {
			if len(a[i]) != len(header) || len(b[i]) != len(header) {
				return "rows differ in column count (-etcd +ember):\n" + lineDiff(etcd.stdout, ember.stdout)
			}
		}
		return cellsDiff(header, a, b, variable)
	}
}

// cellsDiff compares two tables' rows cell by cell, skipping the variable columns.
func cellsDiff(header []string, a, b [][]string, variable []string) string {
	var diffs []string
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return fmt.Sprintf("row %d differs in column count: etcd %q, ember %q", i, a[i], b[i])
		}
		for j, col := range header {
			if !slices.Contains(variable, col) && a[i][j] != b[i][j] {
				diffs = append(diffs, fmt.Sprintf("row %d column %q: etcd %q, ember %q", i, col, a[i][j], b[i][j]))
			}
		}
	}
	return strings.Join(diffs, "\n")
}

// jsonShape compares -w json output: the same fields present, and the same values except at
// the variable paths. A path names object keys joined by ".", with "[]" for array elements:
// "[].Status.raftIndex".
func jsonShape(variable ...string) comparer {
	return func(etcd, ember normalized) string {
		if d := sameExitAndStderr(etcd, ember); d != "" {
			return d
		}
		a, okA := parseJSON(etcd.stdout)
		b, okB := parseJSON(ember.stdout)
		if !okA || !okB {
			return "not one JSON document each (-etcd +ember):\n" + lineDiff(etcd.stdout, ember.stdout)
		}
		fa, fb := map[string][]string{}, map[string][]string{}
		flatten(a, "", fa)
		flatten(b, "", fb)
		var diffs []string
		for _, p := range sortedKeys(fa, fb) {
			va, inA := fa[p]
			vb, inB := fb[p]
			switch {
			case !inB:
				diffs = append(diffs, fmt.Sprintf("%s: only etcd has it (%s)", p, strings.Join(va, ", ")))
			case !inA:
				diffs = append(diffs, fmt.Sprintf("%s: only ember has it (%s)", p, strings.Join(vb, ", ")))
			case len(va) != len(vb):
				diffs = append(diffs, fmt.Sprintf("%s: etcd has %d, ember %d", p, len(va), len(vb)))
			case !slices.Contains(variable, p) && !slices.Equal(va, vb):
				diffs = append(diffs, fmt.Sprintf("%s: etcd %s, ember %s", p, strings.Join(va, ", "), strings.Join(vb, ", ")))
			}
		}
		return strings.Join(diffs, "\n")
	}
}

// flatten records every leaf value of v under its path.
func flatten(v any, path string, out map[string][]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			flatten(e, strings.TrimPrefix(path+"."+k, "."), out)
		}
	case []any:
		for _, e := range v {
			flatten(e, path+"[]", out)
		}
	default:
		b, _ := json.Marshal(v)
		out[path] = append(out[path], string(b))
	}
}

func sortedKeys(ms ...map[string][]string) []string {
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	return keys
}

// snapshotShape compares `snapshot save` except for the server version etcdctl prints.
func snapshotShape(etcd, ember normalized) string {
	version := regexp.MustCompile(`(?m)^Server version .*$`)
	etcd.stdout = version.ReplaceAllString(etcd.stdout, "Server version <version>")
	ember.stdout = version.ReplaceAllString(ember.stdout, "Server version <version>")
	return sameOutput(etcd, ember)
}
