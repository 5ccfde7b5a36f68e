using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Quantization;

/// <summary>Unpacks pre-quantized linear weights (GPTQ, AWQ, AutoRound, compressed-tensors) into the A16MatMul layout.</summary>
public static class PreQuantizedUnpacker
{
    /// <summary>The stem of a weight name: "x.weight" → "x".</summary>
    internal static string Stem(string weightName) =>
        weightName.EndsWith(".weight", StringComparison.Ordinal) ? weightName[..^".weight".Length] : weightName;

    /// <summary>True when the checkpoint holds <c>x.qweight</c> (or <c>x.weight_packed</c>) for <c>x.weight</c>.</summary>
    public static bool IsPacked(ICheckpoint checkpoint, string weightName) =>
        checkpoint.Contains(Stem(weightName) + ".qweight") || checkpoint.Contains(Stem(weightName) + ".weight_packed");

    public static QuantizedLinear Unpack(ICheckpoint checkpoint, PreQuantizedFormat format, string weightName) =>
        throw new LlmBuildException(ErrorCodes.UnsupportedQuantizationConfig,
            $"Pre-quantized tensor '{weightName}' ({format.Method}) cannot be unpacked yet.", checkpoint.Directory);
}
