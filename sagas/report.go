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
		Transform: func(ev *engine.Event) (map[string]any, error) {
			return map[string]any{"scheduled_at": ev.Timestamp}, nil
		},
	}},
}
