namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("QGroupSize does not split a linear weight's inputs K (or, with NumDevice > 1, a device's share of them) into whole groups, or K or the group is odd for 4-bit.")]
    public const string BadGroupSize = "LLMB0201";
    [Code("The checkpoint's quantization_config names a method or variant LlmBuild does not support.")]
    public const string UnsupportedQuantizationConfig = "LLMB0202";
    [Code("The checkpoint's quantization_config lacks a field this method needs (e.g. bits or group_size).")]
    public const string QuantizationConfigIncomplete = "LLMB0203";
    [Code("The forced Quantize mode differs from the checkpoint's dtype; weights are converted (warning).")]
    public const string QuantizeDtypeDiffers = "LLMB0204";
    [Code("The forced Quantize mode contradicts the pre-quantized checkpoint (e.g. w8 on a 4-bit GPTQ source).")]
    public const string QuantizeConflictsWithSource = "LLMB0205";
    [Code("A pre-quantized tensor (qweight, qzeros, scales, g_idx) is missing or has a shape that disagrees with the others.")]
    public const string BadPreQuantizedTensor = "LLMB0206";
    [Code("A weight holds NaN or infinity, so it cannot be quantized.")]
    public const string NonFiniteWeight = "LLMB0207";
    [Code("GGUF tensors of a type that does not map exactly onto A16MatMul are dequantized exactly and quantized again to the requested mode (warning).")]
    public const string GgufRequantized = "LLMB0210";
}
