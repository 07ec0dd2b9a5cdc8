package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/storage"
)

// `sagaz sagas show` says what a waiting saga waits for and marks its step.
func TestShowSagaWaiting(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	v := &httpapi.SagaView{ID: "transfer:key:t-1", Saga: "transfer", Status: storage.StatusExecuting, OwnedHere: true,
		Steps: []storage.Step{{Name: "debit", Status: storage.StepCompleted, Attempts: 1}, {Name: "credit", Status: storage.StepPending, Attempts: 2}},
		Waiting: &httpapi.WaitView{Kind: storage.WaitCommand, Step: "credit", Attempt: 2, Since: t0, Deadline: t0.Add(3 * time.Second),
			For: "the reply to step credit's command on accounts.commands (attempt 2)"}}
	var b bytes.Buffer
	if err := showSaga(&b, v); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"Waiting", "for the reply to step credit's command on accounts.commands (attempt 2), since ", "until ", "▶ credit", "waiting: command"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
