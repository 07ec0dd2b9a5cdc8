package sagas

import (
	"context"

	"github.com/sagaz-go/sagaz/engine"
)

// A cron-triggered demo: a nightly report at 02:00 Berlin time. Each tick
// is published to Kafka and starts one saga (see the cron package).
func init() { engine.Register(NightlyReport) }

// NightlyReport is the cron demo saga.
var NightlyReport = engine.Saga{
	Name: "nightly-report",
	Steps: []engine.Step{
		{Name: "collect", Action: func(context.Context, *engine.Run) error { return nil }},
		{Name: "publish", Action: func(context.Context, *engine.Run) error { return nil }},
	},
	Triggers: []engine.Trigger{{
		Source:   engine.SourceCron,
		Schedule: "CRON_TZ=Europe/Berlin 0 2 * * *",
		// The tick's event: {"schedule", "saga", "scheduled_at", "scheduled_at_local", "published_at"}.
		Transform: func(ev *engine.Event) (map[string]any, error) {
			m, err := ev.JSON()
			if err != nil {
				return nil, err
			}
			return map[string]any{"scheduled_at": m["scheduled_at"], "local": m["scheduled_at_local"]}, nil
		},
		Cron: engine.CronPolicy{CatchUp: engine.CatchUpLatest, Overlap: engine.OverlapSkip},
	}},
}
