package httpapi

// registerConsole adds the endpoints the console reads besides the admin
// API's: the session (login), the overview and, when configured, the dead
// letters.
func (a *API) registerConsole(mux *routeMux) {
	a.sessions = newSessions(a.SessionTTL)
	a.guard.sessions = a.sessions
	a.overview = &overviewCache{}
	a.registerSessions(mux)
	mux.HandleFunc("GET /api/overview", a.listings.limit(a.getOverview))
	if a.DeadLetters != nil {
		a.registerDeadLetters(mux)
	}
}
