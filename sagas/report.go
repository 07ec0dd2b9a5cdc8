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
	Triggers: []engine.Trigger{
		engine.Cron("CRON_TZ=Europe/Berlin 0 2 * * *",
			engine.WithCronPolicy(engine.CronPolicy{CatchUp: engine.CatchUpLatest, Overlap: engine.OverlapSkip}),
			engine.WithTransform(reportContext)),
	},
}

// reportContext keeps the tick's times. A tick's event is {"schedule",
// "saga", "scheduled_at", "scheduled_at_local", "published_at"}.
func reportContext(ev *engine.Event) (map[string]any, error) {
	m, err := ev.JSON()
	if err != nil {
		return nil, err
	}
	return map[string]any{"scheduled_at": m["scheduled_at"], "local": m["scheduled_at_local"]}, nil
}
