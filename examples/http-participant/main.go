// Command http-participant is the service the example YAML saga
// (examples/sagas/order-http.yaml) calls: inventory reservations,
// payments and shipments over HTTP, kept in memory.
//
//	go run ./examples/http-participant -addr 127.0.0.1:8090
//
// Every request's Idempotency-Key is honoured: a request repeated with the
// same key (a retry, or a step run again after a crash) gets the first
// answer again and changes nothing. A body with "fail": true is refused
// with 422, which the saga treats as a permanent failure (it compensates).
// GET /calls lists the requests received, for looking at what the saga did.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Parse()
	srv := &http.Server{Addr: *addr, Handler: newParticipant(log.New(os.Stdout, "", log.LstdFlags)), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Printf("http-participant listening on http://%s (GET /calls lists the requests)", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// call is one request received.
type call struct {
	Method         string `json:"method"`
	Path           string `json:"path"`
	IdempotencyKey string `json:"idempotency_key"`
	Status         int    `json:"status"`
	Replayed       bool   `json:"replayed"`
}

type answer struct {
	status int
	body   any
}

// participant holds the services' state.
type participant struct {
	log          *log.Logger
	mu           sync.Mutex
	seen         map[string]answer // Idempotency-Key -> first answer
	reservations map[string]string // id -> order
	charges      map[string]string // id -> status
	calls        []call
	n            int
}

func newParticipant(l *log.Logger) http.Handler {
	p := &participant{log: l, seen: map[string]answer{}, reservations: map[string]string{}, charges: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /inventory/reservations", p.idempotent(p.reserve))
	mux.HandleFunc("DELETE /inventory/reservations/{id}", p.idempotent(p.release))
	mux.HandleFunc("POST /payments/charges", p.idempotent(p.charge))
	mux.HandleFunc("POST /payments/charges/{id}/refund", p.idempotent(p.refund))
	mux.HandleFunc("POST /shipping/shipments", p.idempotent(p.ship))
	mux.HandleFunc("GET /calls", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.calls)
	})
	return mux
}

type order struct {
	OrderID       string  `json:"order_id"`
	Amount        float64 `json:"amount"`
	ReservationID string  `json:"reservation_id"`
	Fail          bool    `json:"fail"`
}

// idempotent answers a repeated Idempotency-Key with the first answer.
func (p *participant) idempotent(h func(r *http.Request, o order) answer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		var o order
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&o); err != nil {
				writeJSON(w, answer{http.StatusBadRequest, map[string]string{"error": "want a JSON object: " + err.Error()}})
				return
			}
		}
		p.mu.Lock()
		a, replayed := p.seen[key]
		if !replayed {
			a = h(r, o)
			if key != "" {
				p.seen[key] = a
			}
		}
		p.calls = append(p.calls, call{Method: r.Method, Path: r.URL.Path, IdempotencyKey: key, Status: a.status, Replayed: replayed})
		p.mu.Unlock()
		p.log.Printf("%s %s key=%q -> %d%s", r.Method, r.URL.Path, key, a.status, map[bool]string{true: " (replayed)"}[replayed])
		writeJSON(w, a)
	}
}

func writeJSON(w http.ResponseWriter, a answer) {
	if a.body == nil {
		w.WriteHeader(a.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	_ = json.NewEncoder(w).Encode(a.body)
}

func refused(what string) answer {
	return answer{http.StatusUnprocessableEntity, map[string]string{"error": what + " refused (the order asked to fail)"}}
}

// The handlers run under p.mu.

func (p *participant) reserve(_ *http.Request, o order) answer {
	if o.Fail {
		return refused("reservation")
	}
	p.n++
	id := fmt.Sprintf("res-%d", p.n)
	p.reservations[id] = o.OrderID
	return answer{http.StatusCreated, map[string]string{"reservation_id": id}}
}

func (p *participant) release(r *http.Request, _ order) answer {
	id := r.PathValue("id")
	if _, ok := p.reservations[id]; !ok {
		return answer{http.StatusNotFound, map[string]string{"error": "no reservation " + id}}
	}
	delete(p.reservations, id)
	return answer{status: http.StatusNoContent}
}

func (p *participant) charge(_ *http.Request, o order) answer {
	if o.Fail {
		return refused("charge")
	}
	p.n++
	id := fmt.Sprintf("ch-%d", p.n)
	p.charges[id] = "charged"
	return answer{http.StatusCreated, map[string]any{"charge_id": id, "amount": o.Amount}}
}

func (p *participant) refund(r *http.Request, _ order) answer {
	id := r.PathValue("id")
	if _, ok := p.charges[id]; !ok {
		return answer{http.StatusNotFound, map[string]string{"error": "no charge " + id}}
	}
	p.charges[id] = "refunded"
	return answer{http.StatusOK, map[string]string{"charge_id": id, "status": "refunded"}}
}

func (p *participant) ship(_ *http.Request, o order) answer {
	if o.Fail {
		return refused("shipment")
	}
	p.n++
	return answer{http.StatusCreated, map[string]string{"tracking": fmt.Sprintf("TRK-%d-%s", p.n, o.OrderID)}}
}
