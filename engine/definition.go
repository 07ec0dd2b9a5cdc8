package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sagaz-go/sagaz/storage"
)

// Definition versions. A saga runs to its end with the definition it was
// bound to when its first step started: the executor records that
// definition's fingerprint with the saga (storage.Saga.Definition) and
// resumes the saga only with a definition of the same fingerprint — the
// current declaration, or one of the earlier versions it lists in
// Saga.Previous. A saga no declaration of this build matches is parked
// (storage.StatusParked) with the reason, never failed: it resumes by itself
// where a member with that definition owns its partition, or an operator
// moves it on (Engine.RetryWith with a step mapping, Engine.Cancel).

// Fingerprint identifies the shape of a saga definition: its steps, in
// order, by name, which of them wait (a command, an await, a sleep) and
// which have a compensation — what the executor relies on to resume a
// recorded saga step by step. Anything else
// in a step (the code of its action, retry policy, timeout) may change
// without changing it. Compiled and YAML sagas share it: "sha256:" and 16
// hex digits.
func Fingerprint(s *Saga) string { return fingerprintSteps(s.Steps) }

func fingerprintSteps(steps []Step) string {
	h := sha256.New()
	io.WriteString(h, "sagaz-steps/1\n")
	for _, st := range steps {
		io.WriteString(h, st.Name)
		switch { // a step that waits says what for (function steps as before)
		case st.Command != nil:
			io.WriteString(h, "\x00command")
		case st.Await != nil:
			io.WriteString(h, "\x00await")
		case st.Sleep > 0:
			io.WriteString(h, "\x00sleep")
		}
		if st.Compensate != nil || st.CompensateCommand != nil {
			io.WriteString(h, "\x00compensated\n")
		} else {
			io.WriteString(h, "\x00\n")
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

// version is one definition of a saga this build can run: the current
// declaration or an earlier one (Saga.Previous).
type version struct {
	saga    *Saga // Name and Steps; the current declaration's triggers
	fp      string
	current bool
}

// versionsOf builds a saga's versions: the declaration first, then its
// previous versions in the order given.
func versionsOf(s *Saga) []version {
	vs := []version{{saga: s, fp: Fingerprint(s), current: true}}
	for i := range s.Previous {
		p := &Saga{Name: s.Name, Steps: s.Previous[i].Steps, Sensitive: s.Sensitive}
		vs = append(vs, version{saga: p, fp: Fingerprint(p)})
	}
	return vs
}

// validatePrevious checks a declaration's previous versions.
func validatePrevious(s *Saga, bad func(string, ...any)) {
	seen := map[string]string{Fingerprint(s): "the current declaration"}
	for i := range s.Previous {
		p := &s.Previous[i]
		what := fmt.Sprintf("previous version %d", i)
		if p.Name != "" && p.Name != s.Name {
			bad("%s is named %q: a previous version is the same saga (leave its Name empty or %q)", what, p.Name, s.Name)
		}
		if len(p.Previous) > 0 {
			bad("%s lists previous versions of its own: list every earlier version on the current declaration", what)
		}
		if len(p.Steps) == 0 {
			bad("%s has no steps", what)
		}
		steps := map[string]bool{}
		for j, st := range p.Steps {
			switch {
			case st.Name == "":
				bad("%s: step %d has no name", what, j)
			case steps[st.Name]:
				bad("%s: step %q declared twice", what, st.Name)
			}
			steps[st.Name] = true
			if st.Action == nil {
				bad("%s: step %q has no action (it runs the sagas that started with that version)", what, st.Name)
			}
			if st.Timeout < 0 {
				bad("%s: step %q has a negative timeout", what, st.Name)
			}
		}
		fp := fingerprintSteps(p.Steps)
		if prev, dup := seen[fp]; dup {
			bad("%s has the same steps and compensations as %s (fingerprint %s): remove it", what, prev, fp)
		}
		seen[fp] = what
	}
}

// Versions returns the fingerprints of the definitions of a saga this build
// runs: the current declaration's first, then its previous versions. Nil
// for a saga it does not declare.
func (rs *Routes) Versions(name string) []string {
	vs := rs.versions[name]
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.fp
	}
	return out
}

// bind returns the definition a recorded saga runs with, or why none of
// this build's fits (the saga is then parked with that reason).
//
//   - A saga that has not started a step (pending, no step records) runs
//     with the current declaration.
//   - A saga recorded with a definition fingerprint runs with the version of
//     that fingerprint.
//   - A saga recorded by a release that did not record fingerprints runs
//     with the version whose step names, in order, are those it recorded.
func (rs *Routes) bind(rec *storage.Saga) (version, string) {
	vs := rs.versions[rec.Name]
	if len(vs) == 0 {
		return version{}, fmt.Sprintf("saga %q is not declared in this build", rec.Name)
	}
	if rec.Definition == "" && len(rec.Steps) == 0 {
		return vs[0], ""
	}
	if rec.Definition != "" {
		for _, v := range vs {
			if v.fp == rec.Definition && (len(rec.Steps) == 0 || sameNames(v.saga.Steps, rec.Steps)) {
				return v, ""
			}
		}
		return version{}, fmt.Sprintf("saga %q started with definition %s (steps %s); this build declares %s",
			rec.Name, rec.Definition, recordedNames(rec), describeVersions(vs))
	}
	for _, v := range vs {
		if sameNames(v.saga.Steps, rec.Steps) {
			return v, ""
		}
	}
	return version{}, fmt.Sprintf("saga %q was recorded with steps %s, which no definition of this build has; this build declares %s",
		rec.Name, recordedNames(rec), describeVersions(vs))
}

func sameNames(decl []Step, rec []storage.Step) bool {
	if len(decl) != len(rec) {
		return false
	}
	for i := range decl {
		if decl[i].Name != rec[i].Name {
			return false
		}
	}
	return true
}

func stepNames(steps []Step) string {
	names := make([]string, len(steps))
	for i := range steps {
		names[i] = steps[i].Name
	}
	return "[" + strings.Join(names, " ") + "]"
}

func recordedNames(rec *storage.Saga) string {
	names := make([]string, len(rec.Steps))
	for i := range rec.Steps {
		names[i] = rec.Steps[i].Name
	}
	return "[" + strings.Join(names, " ") + "]"
}

func describeVersions(vs []version) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		what := "previous"
		if v.current {
			what = "current"
		}
		parts[i] = fmt.Sprintf("%s %s %s", what, v.fp, stepNames(v.saga.Steps))
	}
	return strings.Join(parts, ", ")
}

// done reports whether a recorded step's action took effect (it is
// completed, or was compensated or being compensated): what a remapping
// must carry over.
func done(st storage.StepStatus) bool {
	return st == storage.StepCompleted || st == storage.StepCompensated || st == storage.StepCompensationFailed
}

// remap moves the recorded steps that took effect onto decl's steps: the
// recorded step named n becomes decl's step mapping[n] (absent from
// mapping: the step of the same name; mapped to "": dropped — its effect
// stays and nothing compensates it). Steps of decl nothing maps to are
// pending. Recorded steps that took no effect (pending, failed) are left
// out. It returns an error wrapping ErrInvalidMapping naming what does not
// fit.
func remap(rec *storage.Saga, decl *Saga, mapping map[string]string) ([]storage.Step, error) {
	idx := make(map[string]int, len(decl.Steps))
	for i := range decl.Steps {
		idx[decl.Steps[i].Name] = i
	}
	recorded := map[string]bool{}
	for i := range rec.Steps {
		recorded[rec.Steps[i].Name] = true
	}
	var problems []string
	for from, to := range mapping {
		if !recorded[from] {
			problems = append(problems, fmt.Sprintf("%q is not a recorded step (recorded: %s)", from, recordedNames(rec)))
		}
		if _, ok := idx[to]; to != "" && !ok {
			problems = append(problems, fmt.Sprintf("%q is not a step of definition %s %s", to, Fingerprint(decl), stepNames(decl.Steps)))
		}
	}
	out := PendingSteps(decl)
	taken := map[int]string{}
	for i := range rec.Steps {
		st := rec.Steps[i]
		if !done(st.Status) {
			continue
		}
		to, mapped := mapping[st.Name]
		if !mapped {
			to = st.Name
		}
		if to == "" {
			continue
		}
		j, ok := idx[to]
		if !ok {
			if !mapped {
				problems = append(problems, fmt.Sprintf("recorded step %q (%s) has no step of that name in definition %s %s: map it to one, or to \"\" to leave its effect uncompensated",
					st.Name, st.Status, Fingerprint(decl), stepNames(decl.Steps)))
			}
			continue
		}
		if prev, dup := taken[j]; dup {
			problems = append(problems, fmt.Sprintf("recorded steps %q and %q both map to %q", prev, st.Name, to))
			continue
		}
		taken[j] = st.Name
		st.Name = to
		out[j] = st
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return nil, fmt.Errorf("%w: %s", ErrInvalidMapping, strings.Join(problems, "; "))
	}
	return out, nil
}
