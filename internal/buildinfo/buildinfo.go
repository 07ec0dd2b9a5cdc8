// Package buildinfo says which build of sagaz is running: the version and
// commit given at link time, else what the Go toolchain recorded.
//
//	go build -ldflags "-X github.com/sagaz-go/sagaz/internal/buildinfo.version=v1.2.0 \
//	    -X github.com/sagaz-go/sagaz/internal/buildinfo.commit=$(git rev-parse HEAD)" ./cmd/consumer
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set with -ldflags -X (see the package doc); empty means "from the build
// information".
var (
	version string
	commit  string
)

// Info describes the running build.
type Info struct {
	Version   string `json:"version"`    // -ldflags version, the module version, or "devel"
	Commit    string `json:"commit"`     // -ldflags commit, the VCS revision, or "unknown"
	Modified  bool   `json:"modified"`   // built from a work tree with uncommitted changes
	GoVersion string `json:"go_version"` // the Go toolchain
}

// Get returns the running build's information.
func Get() Info {
	info := Info{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// String is the one-line form `sagaz version` prints.
func (i Info) String() string {
	s := "sagaz " + i.Version + " (commit " + i.Commit
	if i.Modified {
		s += ", modified"
	}
	return s + ", " + i.GoVersion + ")"
}
