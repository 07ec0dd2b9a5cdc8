package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/sagaz-go/sagaz/deadletter"
)

func (a *API) registerDeadLetters(mux *routeMux) {
	mux.HandleFunc("GET /api/deadletters", a.listings.limit(a.listDeadLetters))
	mux.HandleFunc("POST /api/deadletters/replay", a.replayDeadLetters)
}

// maskValue masks, in a dead letter's JSON value, the fields its saga marks
// sensitive (a value that is not JSON is shown as it is).
func (a *API) maskValue(saga string, value []byte) []byte {
	decl := a.Engine.Routes().Saga(saga)
	if decl == nil || len(decl.Sensitive) == 0 {
		return value
	}
	if m := decl.MaskContext(value); m != nil {
		return m
	}
	return value
}

func (a *API) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	q := deadletter.Query{Reason: r.URL.Query().Get("reason"), Topic: r.URL.Query().Get("topic"), Cursor: r.URL.Query().Get("cursor"),
		Mask: a.maskValue}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			WriteError(w, http.StatusBadRequest, "bad limit", "limit must be 1 to 1000")
			return
		}
		q.Limit = n
	}
	page, err := a.DeadLetters.List(r.Context(), q)
	if err != nil {
		a.deadLetterError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Topic string `json:"topic"`
		deadletter.Page
	}{a.DeadLetters.Topic(), page})
}

// ReplayRequest is the body of POST /api/deadletters/replay.
type ReplayRequest struct {
	DeadLetters []deadletter.Coord `json:"dead_letters"`
}

// ReplayAnswer is its answer.
type ReplayAnswer struct {
	Results  []deadletter.Result `json:"results"`
	Replayed int                 `json:"replayed"`
	Failed   int                 `json:"failed"`
}

func (a *API) replayDeadLetters(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	var req ReplayRequest
	if err := json.Unmarshal(body, &req); err != nil {
		WriteError(w, http.StatusBadRequest, "bad replay request", `want {"dead_letters": [{"partition": 0, "offset": 42}, ...]}: `+err.Error())
		return
	}
	res, err := a.DeadLetters.Replay(r.Context(), req.DeadLetters)
	if err != nil {
		a.deadLetterError(w, err)
		return
	}
	out := ReplayAnswer{Results: res}
	for _, x := range res {
		if x.Error == "" {
			out.Replayed++
		} else {
			out.Failed++
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) deadLetterError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, deadletter.ErrInvalidQuery), errors.Is(err, deadletter.ErrInvalidCursor):
		WriteError(w, http.StatusBadRequest, "bad request", err.Error())
	default:
		WriteError(w, http.StatusServiceUnavailable, "kafka unavailable", err.Error())
	}
}
