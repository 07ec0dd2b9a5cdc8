// Package sagas holds the sagas compiled into the binary. Each file declares
// one saga and registers it in init() with engine.Register; importing this
// package (as cmd/consumer does) is all the wiring there is. The consumer
// subscribes to exactly the topics these triggers name.
//
// To add a saga, add a file here:
//
//	func init() {
//		engine.Register(engine.Saga{
//			Name:  "refund",
//			Steps: []engine.Step{{Name: "refund", Action: refund}},
//			Triggers: []engine.Trigger{
//				engine.Kafka("refunds.requested", engine.PassThrough, engine.WithKey(engine.KeyField("refund_id"))),
//			},
//		})
//	}
package sagas
