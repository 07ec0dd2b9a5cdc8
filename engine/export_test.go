package engine

// SetKeepRecords changes how many queued sagas per lane keep their record
// in memory, for tests; it returns a function that restores it.
func SetKeepRecords(n int) func() {
	old := keepRecords
	keepRecords = n
	return func() { keepRecords = old }
}

// NewRun returns a Run over the given JSON data, for tests of its accessors.
func NewRun(raw string) *Run { return &Run{ID: "test", raw: []byte(raw)} }

var EncodeOut = encodeOut
