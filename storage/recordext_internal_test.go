package storage

import (
	"encoding/binary"
	"testing"
	"time"
)

// The parked and resolved sets are kept by reading records without
// decoding them (parkedOfRecord, resolvedRecord). On any record — also one
// with the same extension twice, which no release writes but a record may
// carry — they must answer as DecodeSaga does, or an update that skips the
// sets (setParked, setResolved) leaves an entry behind.
func TestRecordSetChecksAgreeWithDecode(t *testing.T) {
	park := func(version uint64) Extension {
		v := binary.AppendUvarint(nil, version)
		v = appendStr(v, "stale or current")
		v = appendTime(v, time.Unix(1700000000, 0))
		return Extension{Tag: extPark, Value: v}
	}
	history := func(resolvedAt uint64) Extension {
		return Extension{Tag: extHistory, Value: binary.AppendUvarint(binary.AppendUvarint(nil, resolvedAt), 0)}
	}
	const v = 7
	cases := [][]Extension{
		{park(v - 1), park(v)},
		{park(v), park(v - 1)},
		{park(v - 1)},
		{park(v)},
		{history(0), history(v)},
		{history(v), history(0)},
		{history(v - 1), history(v)},
		{history(v)},
	}
	for _, st := range []Status{StatusPending, StatusExecuting, StatusCompensating, StatusFailed, StatusCompleted} {
		for i, exts := range cases {
			s := &Saga{Name: "order", Trigger: "kafka:orders", Status: st, Version: v,
				Source: Position{Topic: "orders", Partition: 1, Offset: 5}, Context: []byte(`{}`), Extensions: exts}
			rec := EncodeSaga(nil, s)
			got, err := DecodeSaga(rec)
			if err != nil {
				t.Fatalf("status %v, case %d: %v", st, i, err)
			}
			_, parked := parkedOfRecord(rec)
			if want := got.Status == StatusParked; parked != want {
				t.Errorf("status %v, case %d: parkedOfRecord %v, DecodeSaga parked %v", st, i, parked, want)
			}
			if want := got.Status == StatusResolved; resolvedRecord(rec) != want {
				t.Errorf("status %v, case %d: resolvedRecord %v, DecodeSaga resolved %v", st, i, resolvedRecord(rec), want)
			}
		}
	}
}
