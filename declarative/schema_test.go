package declarative_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/sagaz-go/sagaz/declarative"
)

// schema compiles docs/saga.schema.json.
func schema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("../docs/saga.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("docs/saga.schema.json is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("saga.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("saga.schema.json")
	if err != nil {
		t.Fatalf("docs/saga.schema.json does not compile: %v", err)
	}
	return s
}

// validateFile checks every YAML document of a file against the schema.
func validateFile(t *testing.T, s *jsonschema.Schema, path string) error {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var errs []error
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if v == nil {
			continue
		}
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(inst); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// TestSchemaAgreesWithLoader: every example and valid test file passes the
// editors' schema and loads; every invalid one is rejected by both.
func TestSchemaAgreesWithLoader(t *testing.T) {
	s := schema(t)
	examples, _ := filepath.Glob("../examples/sagas/*.yaml")
	valid, _ := filepath.Glob("testdata/valid/*.yaml")
	invalid, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(examples) == 0 || len(valid) == 0 || len(invalid) < 5 {
		t.Fatalf("test files missing: %d examples, %d valid, %d invalid", len(examples), len(valid), len(invalid))
	}
	for _, f := range append(examples, valid...) {
		if err := validateFile(t, s, f); err != nil {
			t.Errorf("%s: the schema rejects it: %v", f, err)
		}
		if _, err := declarative.Load(f); err != nil {
			t.Errorf("%s: the loader rejects it: %v", f, err)
		}
	}
	for _, f := range invalid {
		if err := validateFile(t, s, f); err == nil {
			t.Errorf("%s: the schema accepts it", f)
		}
		if _, err := declarative.Load(f); err == nil {
			t.Errorf("%s: the loader accepts it", f)
		}
	}
}

// TestReadmeExampleLoads: the YAML saga in README.md passes the schema and
// the loader.
func TestReadmeExampleLoads(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := bytes.Cut(readme, []byte("```yaml\nname: refund\n"))
	block, _, ok2 := bytes.Cut(rest, []byte("```"))
	if !ok || !ok2 {
		t.Fatal("README.md has no ```yaml block starting with name: refund")
	}
	path := write(t, t.TempDir(), "refund.yaml", "name: refund\n"+string(block))
	if err := validateFile(t, schema(t), path); err != nil {
		t.Errorf("schema: %v", err)
	}
	if _, err := declarative.Load(path); err != nil {
		t.Errorf("loader: %v", err)
	}
}
