namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("An LlmCalibrationText file is missing, unreadable or too short to give the calibration samples.")]
    public const string BadCalibrationText = "LLMB0230";
    [Code("QuantizeMethod gptq or awq was asked for a build it cannot calibrate (no 4/8-bit Quantize mode, a pre-quantized or GGUF source, mixture-of-experts layers, tensor parallelism).")]
    public const string CalibrationUnsupported = "LLMB0231";
    [Code("A cached calibration statistics file under obj/ is damaged: computed again (warning), or missing when a block is quantized (error; build again).")]
    public const string CalibrationCacheDiscarded = "LLMB0232";
    [Code("A linear's calibration Hessian is not positive definite even after damping (its inputs are degenerate).")]
    public const string CalibrationHessianSingular = "LLMB0233";
}
