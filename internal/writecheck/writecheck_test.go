package writecheck

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"testing"

	"github.com/ember-kv/ember"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Outcome
	}{
		{"nil", nil, OK},
		{"timeout", ember.ErrTimeout, Unknown},
		{"timeout wrapping a context error", fmt.Errorf("%w: %w", ember.ErrTimeout, context.DeadlineExceeded), Unknown},
		{"context error alone", context.Canceled, Unknown},
		{"unexpected error", errors.New("boom"), Unknown},
		{"no leader", fmt.Errorf("%w: %w", ember.ErrNoLeader, context.DeadlineExceeded), Definite},
		{"stopped", ember.ErrStopped, Definite},
		{"lease not found", ember.ErrLeaseNotFound, Definite},
		{"timeout wrapping no leader", fmt.Errorf("%w: %w", ember.ErrTimeout, ember.ErrNoLeader), Both},
		{"stopped wrapping timeout", fmt.Errorf("%w: %w", ember.ErrStopped, ember.ErrTimeout), Both},
		{"joined", errors.Join(ember.ErrTimeout, ember.ErrStopped), Both},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err); got != tc.want {
				t.Fatalf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestDefiniteErrors_EveryExportedError keeps DefiniteErrors in step with errors.go: every
// exported error but ErrTimeout promises that nothing was applied.
func TestDefiniteErrors_EveryExportedError(t *testing.T) {
	names, err := ExportedErrorNames("../../errors.go")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, name := range names {
		if name != "ErrTimeout" {
			want = append(want, "ember."+name)
		}
	}
	// The names of DefiniteErrors, read from this package's source, in order.
	var got []string
	f, err := parser.ParseFile(token.NewFileSet(), "writecheck.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok && vs.Names[0].Name == "DefiniteErrors" {
			for _, e := range vs.Values[0].(*ast.CompositeLit).Elts {
				sel := e.(*ast.SelectorExpr)
				got = append(got, sel.X.(*ast.Ident).Name+"."+sel.Sel.Name)
			}
		}
		return true
	})
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("DefiniteErrors = %v, want every exported error but ErrTimeout: %v", got, want)
	}
}
