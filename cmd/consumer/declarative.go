package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
)

// validateCmd: validate PATH — load YAML sagas as `run --sagas` would, and
// list them, or every problem with its file:line:column.
func validateCmd(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("sagaz validate", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sagaz validate PATH (a YAML file or a directory of *.yaml / *.yml)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: sagaz validate PATH (a YAML file or a directory of *.yaml / *.yml)")
	}
	path := fs.Arg(0)
	defs, err := declarative.Load(path)
	if err == nil { // names taken by the compiled sagas
		err = declarative.CheckNames(engine.DefaultRegistry(), defs)
	}
	if err != nil {
		return fmt.Errorf("%s is not valid:\n%w", path, err)
	}
	for _, d := range defs {
		fmt.Fprintf(w, "ok  %s  (%s:%d, %d triggers, %d steps, %s)\n", d.Name, d.File, d.Line, len(d.Triggers), len(d.Steps), d.Fingerprint)
	}
	return nil
}

// showDefinition prints a saga's definition: a YAML saga from path, or a
// compiled one.
func showDefinition(w io.Writer, name, path string) error {
	var yamlNames []string
	if path != "" {
		defs, err := declarative.Load(path)
		if err != nil {
			return err
		}
		for _, d := range defs {
			if d.Name == name {
				s := d.Saga()
				return declarative.Describe(w, &s, d)
			}
			yamlNames = append(yamlNames, d.Name)
		}
	}
	routes, err := engine.DefaultRegistry().Routes()
	if err != nil {
		return err
	}
	if s := routes.Saga(name); s != nil {
		return declarative.Describe(w, s, nil)
	}
	var compiled []string
	for _, r := range routes.All() {
		if !slices.Contains(compiled, r.Saga.Name) {
			compiled = append(compiled, r.Saga.Name)
		}
	}
	where := "no --sagas given (or SAGAZ_SAGAS) for YAML sagas"
	if path != "" {
		where = fmt.Sprintf("in %s: %v", path, yamlNames)
	}
	return fmt.Errorf("no saga named %q (compiled in: %v; %s)", name, compiled, where)
}
