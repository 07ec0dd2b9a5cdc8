package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// GET /api/events/{topic}:{partition}:{offset}: what an accepted webhook
// call or manual event did. The 202 answer links to it ("event"). Answered
// by the member that owns the event's partition, from the outcome it
// recorded when it consumed the event (engine/outcome.go), with each saga
// looked up where it lives:
//
//	{"event": ..., "consumed": true, "consumed_at": ...,
//	 "routes": [{"saga", "trigger", "outcome": "started" | "joined" |
//	            "starting" | "ignored" | "dead_letter", "saga_id", "status",
//	            "reason", "error"}]}
//
// "started": the saga this event started; "joined": the event's key named
// a saga another event had started; "starting": its start is on its way
// to the partition that owns its key; "consumed": false while the event
// waits to be consumed.

// EventView answers GET /api/events/{id}.
type EventView struct {
	Event      string       `json:"event"`
	Consumed   bool         `json:"consumed"`
	ConsumedAt string       `json:"consumed_at,omitempty"`
	Routes     []EventRoute `json:"routes"`
}

// EventRoute is what the event did for one trigger.
type EventRoute struct {
	engine.RouteOutcome
	Status string `json:"status,omitempty"`
}

// eventLink is the path of an event's outcome.
func eventLink(p storage.Position) string { return "/api/events/" + url.PathEscape(engine.EventID(p)) }

func (a *API) getEvent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	pos, err := engine.ParseEventID(id)
	if err != nil {
		WriteError(w, http.StatusBadRequest, "bad event id", err.Error())
		return
	}
	if a.toOwner(w, r, pos.TopicPartition(), nil) {
		return
	}
	p := pos.TopicPartition()
	v, ok, err := a.Store.GetMeta(r.Context(), p, engine.OutcomeKey(pos.Offset))
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "store error", err.Error())
		return
	}
	out := EventView{Event: id, Routes: []EventRoute{}}
	if !ok {
		next, known, err := a.Store.NextOffset(r.Context(), p)
		switch {
		case err != nil:
			WriteError(w, http.StatusInternalServerError, "store error", err.Error())
		case !known || pos.Offset >= next:
			writeJSON(w, http.StatusOK, out) // not consumed yet
		default:
			WriteError(w, http.StatusNotFound, "no outcome", fmt.Sprintf("%s was consumed but no outcome is kept for it: not a webhook call or manual event, or older than the retention", id))
		}
		return
	}
	o, err := engine.DecodeOutcome(v)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "store error", "outcome record: "+err.Error())
		return
	}
	out.Consumed, out.ConsumedAt = true, o.At.Format("2006-01-02T15:04:05.000Z07:00")
	for _, ro := range o.Routes {
		er := EventRoute{RouteOutcome: ro}
		if ro.Outcome == "saga" {
			s, err := a.lookupSaga(r.Context(), ro.SagaID)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				er.Outcome = "starting"
			case err != nil:
				er.Outcome, er.Error = "unknown", err.Error()
			default:
				er.Status = s.Status.String()
				er.Outcome = "started"
				if s.Keyed && s.Origin != pos {
					er.Outcome = "joined"
				}
			}
		}
		out.Routes = append(out.Routes, er)
	}
	writeJSON(w, http.StatusOK, out)
}

// sagaRef is what getEvent needs of a saga, wherever it lives.
type sagaRef struct {
	Status storage.Status
	Origin storage.Position
	Keyed  bool
}

// lookupSaga finds a saga here or on the member that owns its partition.
func (a *API) lookupSaga(ctx context.Context, id string) (sagaRef, error) {
	home, err := a.home(id)
	if err == nil && a.Peers != nil && !a.Engine.Owns(home) { // the saga may live on any member
		peers, err := a.Peers(ctx)
		if err != nil {
			return sagaRef{}, err
		}
		for _, p := range peers {
			for _, q := range p.Partitions {
				if q != home.TopicPartition() || p.Self {
					continue
				}
				if p.URL == "" {
					return sagaRef{}, fmt.Errorf("member %s owns %s but has not published its address", p.MemberID, q)
				}
				resp, err := a.peerRequest(ctx, http.MethodGet, p.URL, "/api/sagas/"+url.PathEscape(id), "", nil, "")
				if err != nil {
					return sagaRef{}, err
				}
				defer resp.Body.Close()
				if resp.StatusCode == http.StatusNotFound {
					return sagaRef{}, storage.ErrNotFound
				}
				var v SagaView
				if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
					return sagaRef{}, fmt.Errorf("%s answered %d", p.URL, resp.StatusCode)
				}
				return sagaRef{Status: v.Status, Origin: v.Origin, Keyed: v.Origin.Topic != ""}, nil
			}
		}
	}
	s, err := a.Store.Get(ctx, id)
	if err != nil {
		return sagaRef{}, err
	}
	return sagaRef{Status: s.Status, Origin: s.Origin, Keyed: s.Keyed()}, nil
}
