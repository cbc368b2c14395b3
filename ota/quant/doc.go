// Package quant turns a float32 ONNX model into an int8 one for edge devices and proves, in ONNX
// Runtime, that the int8 model still gives the float model's answers.
//
// It owns: reading models (weights stored as initializers or as Constant nodes, in subgraphs
// too, and external tensor data), static Q/DQ quantization calibrated on reference samples
// (per-channel symmetric int8 weights, asymmetric activations, min-max or percentile ranges) laid
// out so that ORT fuses it into QLinearConv/QGemm/QLinearMatMul, with BatchNormalization and
// scalar affine blocks folded into the Conv before them and hard-swish computed on the integers
// (uint8 Clip + QLinearMul on a grid where -3 and 0 are exact levels, see hardSwishGrid), so that
// CNNs such as MobileNetV3/PPLCNet stay quantized between convolutions; a layout chosen for ORT's
// CPU kernels: depthwise convolutions widened with zero filters to a multiple of 16 channels so
// that MLAS's packed int8 depthwise kernel takes them (padDepthwise, exact), squeeze-excite
// pooling and scaling on the integers (QLinearGlobalAveragePool, QLinearMul), float where ORT's
// int8 kernel is slow (a MaxPool input) or a lone Q/DQ pair would cost more than it saves
// (dropIsolated), each such choice reported in Result.Skipped with its reason; QuantizeBest, which
// picks the calibration on agreement and then the fastest layout that passes the gate, measured
// on the build machine (SpeedGate says when int8 is still slower than fp32, which a bundle builder
// must refuse unless forced); dynamic MatMulInteger
// quantization for MatMul-heavy models, the list of what was skipped and why, and the accuracy
// gate (Evaluate, Gate) that compares a quantized model — ours or one made elsewhere — with its
// float parent: agreement, error figures, sizes, latency and the kernels ORT actually ran.
//
// It must not: know about bundles, manifests or the fleet (ota/bundle and the control plane call
// it and record its Result and Report), import onnxruntime_go directly (internal/onnxrt is the one
// wrapper), or write files other than ORT's profile in a temporary folder.
package quant
