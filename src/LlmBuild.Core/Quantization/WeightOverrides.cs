using LlmBuild.Core.Checkpoints;

namespace LlmBuild.Core.Quantization;

/// <summary>
/// What calibration decided for one weight owner, by source tensor name: linears already quantized (GPTQ, or AWQ's
/// scaled weights), and float tensors whose values changed (norm weights and up_proj rows AWQ's scales were folded
/// into). The writer stores these instead of reading and rounding the checkpoint's values.
/// </summary>
public sealed class WeightOverrides
{
    public Dictionary<string, QuantizedLinear> Quantized { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, float[]> Floats { get; } = new(StringComparer.Ordinal);
}
