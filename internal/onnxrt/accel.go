package onnxrt

import (
	"os"
	"os/exec"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// Accelerators DetectAccelerators can report.
const (
	AccelNVIDIAGPU = "nvidia-gpu" // a discrete or data-centre NVIDIA GPU with its driver loaded
	AccelJetson    = "jetson"     // an NVIDIA Jetson (integrated GPU; TensorRT is part of JetPack)
)

// DetectAccelerators reports accelerator hardware from cheap local evidence only (device nodes,
// files, PATH); it loads nothing and runs nothing. It says what the device has, not what the
// loaded ONNX Runtime can use: see AvailableProviders for that.
func DetectAccelerators() []string {
	var acc []string
	if fileExists("/etc/nv_tegra_release") {
		acc = append(acc, AccelJetson)
	} else if fileExists("/dev/nvidia0") || onPath("nvidia-smi") {
		acc = append(acc, AccelNVIDIAGPU)
	}
	return acc
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func onPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

var (
	providersOnce sync.Once
	providers     []string
)

// AvailableProviders returns the execution providers the loaded ONNX Runtime accepts: always
// "cpu", plus "cuda" and "tensorrt" when their provider options can be created and appended to a
// session's options. The binding does not expose ORT's GetAvailableProviders, so this probes;
// appending can still succeed where a session later fails to start (a missing CUDA library is
// only found then), which is why NewSession falls back on its own. The result is cached: the
// library cannot change within a process. It returns nil before Init.
func AvailableProviders() []string {
	if !Initialized() {
		return nil
	}
	providersOnce.Do(func() {
		providers = []string{ProviderCPU}
		for _, p := range []string{ProviderCUDA, ProviderTensorRT} {
			if probeProvider(p) == nil {
				providers = append(providers, p)
			}
		}
	})
	return providers
}

func probeProvider(p string) error {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return err
	}
	defer so.Destroy()
	if p == ProviderTensorRT {
		o, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return err
		}
		defer o.Destroy()
		return so.AppendExecutionProviderTensorRT(o)
	}
	o, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return err
	}
	defer o.Destroy()
	return so.AppendExecutionProviderCUDA(o)
}
