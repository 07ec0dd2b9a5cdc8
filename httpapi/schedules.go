package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/storage"
)

func (a *API) registerSchedules(mux *routeMux) {
	mux.HandleFunc("GET /api/schedules", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"schedules": a.Schedules.Table(time.Now())})
	})
	op := func(do func(ctx context.Context, id string) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if err := do(r.Context(), id); err != nil {
				a.scheduleError(w, r, id, err)
				return
			}
			writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "status": "accepted"})
		}
	}
	mux.HandleFunc("POST /api/schedules/{id}/pause", op(a.Schedules.Pause))
	mux.HandleFunc("POST /api/schedules/{id}/resume", op(a.Schedules.Resume))
	mux.HandleFunc("POST /api/schedules/{id}/trigger", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		key, err := a.Schedules.TriggerNow(r.Context(), id)
		if err != nil {
			a.scheduleError(w, r, id, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "tick": key})
	})
	mux.HandleFunc("POST /api/schedules/{id}/backfill", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		body, ok := a.readBody(w, r)
		if !ok {
			return
		}
		var rng struct{ From, To time.Time }
		if err := json.Unmarshal(body, &rng); err != nil || rng.From.IsZero() || rng.To.IsZero() || rng.To.Before(rng.From) {
			WriteError(w, http.StatusBadRequest, "bad range", `want {"from": RFC 3339 time, "to": a later RFC 3339 time}`)
			return
		}
		n, err := a.Schedules.Backfill(r.Context(), id, rng.From, rng.To)
		if err != nil {
			a.scheduleError(w, r, id, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "ticks_published": n})
	})
}

func (a *API) scheduleError(w http.ResponseWriter, r *http.Request, id string, err error) {
	switch {
	case errors.Is(err, cron.ErrUnknownSchedule):
		WriteError(w, http.StatusNotFound, "unknown schedule", id)
	case errors.Is(err, cron.ErrNotOwner):
		detail := err.Error()
		for _, row := range a.Schedules.Table(time.Now()) {
			if row.ID == id && a.Owner != nil {
				if o := a.Owner(r.Context(), storage.Partition{Topic: a.CronTopic, Partition: row.Partition}); o != "" {
					detail += fmt.Sprintf(": %s", o)
				}
			}
		}
		WriteError(w, http.StatusConflict, "not on this member", detail)
	case errors.Is(err, cron.ErrTooManyTicks):
		WriteError(w, http.StatusBadRequest, "range too long", err.Error())
	default:
		WriteError(w, http.StatusServiceUnavailable, "kafka unavailable", err.Error())
	}
}
