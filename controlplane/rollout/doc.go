// Package rollout is the control plane's rollout controller: it drives the pure engine in deploy/
// as a reconciler (after nomad's deploymentwatcher). On a ticker and whenever a device's report
// changes it loads each active rollout from the store, builds the Observation from the registry
// (online, active bundle, install state mapped from the agent's lifecycle step) and the metrics
// from a MetricsSource, calls deploy.Step, and then:
//
//  1. writes the updated rollout, the fleet actions it returned (an outbox) and an audit entry per
//     decision in ONE store transaction;
//  2. executes the outbox in order through Fleet (desired states, group baselines), every action
//     idempotent, and removes what it executed.
//
// At start the outbox is replayed, so a control plane killed between 1 and 2 neither forgets an
// action nor sends one twice (re-sending the same desired state changes nothing).
//
// It owns the "rollouts", "rollout_outbox" and "audit" buckets and validates what deploy cannot
// see: the bundle exists, is compatible with every targeted device, and has the registry stage a
// production group requires; a device takes part in one active rollout per model at a time. It
// never talks MQTT or HTTP itself: Fleet and MetricsSource are the boundary.
package rollout
