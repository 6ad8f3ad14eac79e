package writecheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strings"
)

// ExportedErrorNames returns the sorted names of the exported Err variables that the Go file at
// path declares, so that tests can check that a table of errors leaves none out.
func ExportedErrorNames(path string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.VAR {
			continue
		}
		for _, s := range gd.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				if n.IsExported() && strings.HasPrefix(n.Name, "Err") {
					names = append(names, n.Name)
				}
			}
		}
	}
	slices.Sort(names)
	return names, nil
}
