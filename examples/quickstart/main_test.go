package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"put config/color=blue at revision 2",
		"get config/color=blue (version 1)",
		"cas blue->green succeeded=true at revision 3",
		"watch: PUT config/color=blue at revision 2",
		"watch: PUT config/color=green at revision 3",
		"instances after revoking their lease: 0",
		"required revision has been compacted",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
