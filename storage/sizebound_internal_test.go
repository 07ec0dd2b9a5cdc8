package storage

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// EncodeSaga sizes its buffer with encodedSizeBound: below the encoded
// length it would allocate twice; far above it, every record in memory (the
// store's, then the changelog's until acknowledged) would carry the waste.
// The fields every record has are sized exactly, so a saga without
// extensions gets a buffer at most the extension count's spare bytes
// longer than its record; with extensions the bound may be generous but
// never short.
func TestEncodedSizeBoundIsTight(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		return strings.Repeat("s", []int{0, 1, 127, 128, 300, 16383, 16384}[r.IntN(7)])
	}
	tm := func() time.Time {
		switch r.IntN(4) {
		case 0:
			return time.Time{}
		case 1:
			return time.Unix(0, r.Int64N(1<<62)) // after 1970
		case 2:
			return time.Unix(0, -r.Int64N(1<<62)) // before
		}
		return time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC) // out of UnixNano's range: its result is undefined, but both sides use it
	}
	num := func() int64 {
		return []int64{0, 1, -1, 63, 64, -65, 1 << 40, math.MaxInt64, math.MinInt64}[r.IntN(9)]
	}
	for i := range 2000 {
		s := &Saga{Name: str(), Trigger: str(), Status: StatusExecuting, Source: Position{Topic: str(), Partition: int32(num()), Offset: num()},
			EventTime: tm(), CreatedAt: tm(), UpdatedAt: tm(), IdempotencyKey: str(), Error: str(), Context: []byte(str()), Version: uint64(num())}
		for range r.IntN(5) {
			s.Steps = append(s.Steps, Step{Name: str(), Status: StepCompleted, Attempts: uint32(num()), StartedAt: tm(), EndedAt: tm(),
				Error: str(), CompAttempts: uint32(num()), CompError: str(), CompEndedAt: tm()})
		}
		plain := i%2 == 0
		if !plain {
			s.Origin = Position{Topic: str(), Partition: int32(num()), Offset: num()}
			s.ConcurrencyKey, s.Definition = str(), str()
			s.Wait = &Wait{Kind: WaitEvent, Step: r.IntN(5), Attempt: uint32(num()), Since: tm(), Deadline: tm(), Topic: str(), Field: str(), Value: str()}
			s.Uncertain = []int{0, r.IntN(1 << 20)}
			s.Extensions = []Extension{{Tag: 99, Value: []byte(str())}}
		}
		bound, got := encodedSizeBound(s), len(EncodeSaga(nil, s))
		if bound < got {
			t.Fatalf("saga %d: bound %d below the encoded length %d", i, bound, got)
		}
		if plain && bound > got+9 {
			t.Fatalf("saga %d (no extensions): bound %d, encoded %d: more than the extension count's 9 spare bytes", i, bound, got)
		}
	}
}
