package sagaztest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Release is a built binary of an earlier release.
type Release struct {
	Tag    string // e.g. v0.1.0
	Commit string
	Bin    string
}

// PreviousRelease builds the sagaz binary of the previous release: the
// newest tag "v*" reachable from HEAD that is not HEAD's own commit (or the
// ref in $SAGAZ_PREVIOUS_RELEASE). Its source is taken with `git archive`
// (no worktree, no checkout, nothing pushed) and built once per commit
// into the user's cache directory (sagaz/releases/<commit>/sagaz), so
// later runs reuse it. Without git, a repository or a release tag, the
// test is skipped with the reason.
func PreviousRelease(t testing.TB) Release {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the previous release cannot be built from its tag")
	}
	top, err := gitOut("", "rev-parse", "--show-toplevel")
	if err != nil {
		t.Skipf("not in a git checkout (%v): the previous release cannot be built from its tag", err)
	}
	ref := os.Getenv("SAGAZ_PREVIOUS_RELEASE")
	if ref == "" {
		head, err := gitOut(top, "rev-parse", "HEAD")
		if err != nil {
			t.Fatal(err)
		}
		tags, err := gitOut(top, "tag", "--list", "v*", "--merged", "HEAD", "--sort=-v:refname")
		if err != nil {
			t.Fatal(err)
		}
		for _, tag := range strings.Fields(tags) {
			if c, err := gitOut(top, "rev-parse", tag+"^{commit}"); err == nil && c != head {
				ref = tag
				break
			}
		}
		if ref == "" {
			t.Skip("no release tag v* below HEAD in this checkout (a shallow clone? `git fetch --tags`), and SAGAZ_PREVIOUS_RELEASE is unset: the previous release cannot be built")
		}
	}
	commit, err := gitOut(top, "rev-parse", ref+"^{commit}")
	if err != nil {
		t.Fatalf("SAGAZ_PREVIOUS_RELEASE=%q: %v", ref, err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "sagaz", "releases", commit)
	bin := filepath.Join(dir, "sagaz")
	if _, err := os.Stat(bin); err == nil {
		return Release{Tag: ref, Commit: commit, Bin: bin}
	}
	src := t.TempDir()
	tar := filepath.Join(src, "src.tar")
	if out, err := exec.Command("git", "-C", top, "archive", "--format=tar", "-o", tar, commit).CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", ref, err, out)
	}
	if out, err := exec.Command("tar", "-xf", tar, "-C", src).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", ref, err, out)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, fmt.Sprintf("sagaz.%d.tmp", os.Getpid()))
	build := exec.Command("go", "build", "-trimpath", "-o", tmp,
		"-ldflags", "-X github.com/sagaz-go/sagaz/internal/buildinfo.version="+ref+" -X github.com/sagaz-go/sagaz/internal/buildinfo.commit="+commit,
		"./cmd/consumer")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s (%s): %v\n%s", ref, commit, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return Release{Tag: ref, Commit: commit, Bin: bin}
}

func gitOut(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("git %s: %v %s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(string(out)), nil
}
