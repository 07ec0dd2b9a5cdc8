package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestLinkTimeValuesWin(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v1.2.3", "abc123"
	i := Get()
	if i.Version != "v1.2.3" || i.Commit != "abc123" || i.GoVersion != runtime.Version() {
		t.Fatalf("Get() = %+v", i)
	}
	if s := i.String(); !strings.HasPrefix(s, "sagaz v1.2.3 (commit abc123") {
		t.Errorf("String() = %q", s)
	}
	version, commit = "", ""
	if i := Get(); i.Version == "" || i.Commit == "" {
		t.Errorf("without link-time values: %+v, want fallbacks", i)
	}
}
