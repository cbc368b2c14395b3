package rollout

import (
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/deploy"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// The agent's lifecycle steps as it reports them (agent/updater; the control plane may not import
// the agent, so the wire strings are repeated here).
const (
	stepIdle        = "idle"
	stepDownloading = "downloading"
	stepVerifying   = "verifying"
	stepChecking    = "checking"
	stepUnpacking   = "unpacking"
	stepLoading     = "loading"
	stepSmokeTest   = "smoke_test"
	stepSwitching   = "switching"
	stepBaking      = "baking"
	stepCommitted   = "committed"
	stepReverting   = "reverting"
	stepReverted    = "reverted"
	stepFailed      = "failed"

	reasonStalled = "download_stalled"
)

// observe builds deploy's view of the rollout's devices from the registry.
// variants holds the ids that count as the rollout's bundle (its variants).
func observe(r *deploy.Rollout, devs map[string]fleet.Device, variants map[string]bool) deploy.Observation {
	obs := deploy.Observation{Devices: make(map[string]deploy.DeviceState, len(r.Devices))}
	model := r.Spec.ModelName()
	for _, rec := range r.Devices {
		d, ok := devs[rec.Device]
		if !ok {
			continue // deregistered: unknown, not online
		}
		st := deploy.DeviceState{Online: d.Online}
		if !d.Online {
			st.OfflineSince = d.StatusAt
		}
		if d.Reported != nil {
			if m, ok := d.Reported.Models[model]; ok {
				st.Bundle = m.Active
				target := r.Spec.Bundle
				if variants[m.Target] {
					target = m.Target // the variant this device was given
				}
				if variants[m.Active] {
					st.Bundle = r.Spec.Bundle // deploy compares with the rollout's bundle
				}
				st.Install, st.Reason = installState(target, m)
			}
		}
		if rec.Status == deploy.StatusRollingBack && rec.Previous == "" {
			// Reverting a device that had no previous bundle removes the model from its desired
			// state; the agent keeps serving what it has (it never stops a working model), so
			// nothing on the device can show the revert. The desired state is the truth here.
			st.Bundle = ""
		}
		obs.Devices[rec.Device] = st
	}
	return obs
}

// installState maps the agent's report for the model to deploy's install state for bundle:
//
//	target is another bundle           -> "" (the desired state has not arrived yet)
//	idle                               -> pending
//	downloading                        -> downloading (stalled when the reason is download_stalled)
//	verifying .. switching             -> downloading (in flight: deploy has no separate installing)
//	baking, committed (bundle active)  -> installed: the bundle serves, so the gates can judge it
//	failed                             -> failed, with the agent's reason
//	reverting, reverted                -> failed: the device switched back by itself during its bake
func installState(bundle string, m wire.ModelReport) (deploy.InstallState, string) {
	if m.Target != bundle {
		return "", ""
	}
	why := m.Reason
	if m.Message != "" {
		why += ": " + m.Message
	}
	switch m.State {
	case stepIdle, "":
		return deploy.InstallPending, ""
	case stepDownloading:
		if m.Reason == reasonStalled {
			return deploy.InstallStalled, why
		}
		return deploy.InstallDownloading, ""
	case stepVerifying, stepChecking, stepUnpacking, stepLoading, stepSmokeTest, stepSwitching:
		return deploy.InstallDownloading, ""
	case stepBaking, stepCommitted:
		if m.Active == bundle {
			return deploy.InstallInstalled, ""
		}
		return deploy.InstallDownloading, ""
	case stepFailed:
		return deploy.InstallFailed, why
	case stepReverting, stepReverted:
		return deploy.InstallFailed, "reverted by the device: " + why
	}
	return "", ""
}
