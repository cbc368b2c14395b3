// Package deploy owns rollouts: plan, stages, gates, statistics and decisions, as pure functions
// over what the control plane observes (device states, metrics). It has no MQTT, no HTTP, no disk,
// no goroutines and no clock of its own: time is passed in.
//
// The control plane runs it as a reconciler (after nomad's deploymentwatcher): on a ticker and on
// events it loads the stored Rollout, asks Rollout.Cohorts which metrics the next look needs,
// calls Step with the observation, persists the updated Rollout together with the returned
// actions (AssignDesired, RevertDesired, SetGroupBaseline, Record), then acts. Step reaches a fixed
// point, so a repeated call sends nothing twice and a restart continues from the store.
//
//   - New validates a Spec (errors wrap ErrInvalidSpec and name the field) and plans it: Plan
//     stratifies the target by (group, arch) and orders it from the seed, so early stages are
//     representative and any decision can be replayed.
//   - Each stage assigns its devices within the rate limit, waits for installs (install success,
//     stall and offline counts), bakes, and looks at the model-aware gates a fixed number of times
//     (EvaluateModel: error rate, latency, output shift, input drift, accuracy, and each canary
//     device's own before/after). A gate fails only when its absolute floor is exceeded and its
//     test is significant at alpha / (stages * looks * gates); too few samples means wait.
//   - A failure rolls back (or pauses, per OnFailure); operators Pause, Resume, Approve, Abort,
//     Rollback and RollbackGroup, which return ErrState where the state forbids them.
//
// Package deploy/stats holds the statistical tests. RESULTS.md has the measured false-alarm rate
// and detection delays.
package deploy
