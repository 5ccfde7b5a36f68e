namespace LlmBuild.Core.Models;

/// <summary>Element type of a graph tensor, named as in MLIR.</summary>
public enum GraphDType { F32, BF16, F16, SI32, UI8 }

public static class GraphDTypes
{
    /// <summary>The MLIR element type name (f32, bf16, f16, si32, ui8).</summary>
    public static string MlirName(this GraphDType t) => t switch
    {
        GraphDType.F32 => "f32",
        GraphDType.BF16 => "bf16",
        GraphDType.F16 => "f16",
        GraphDType.SI32 => "si32",
        GraphDType.UI8 => "ui8",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>The activation dtype of a resolved model ("bf16", "f16", or "f32" for Quantize=f32).</summary>
    public static GraphDType Activation(string activationDtype) => activationDtype switch
    {
        "bf16" => GraphDType.BF16,
        "f16" => GraphDType.F16,
        "f32" => GraphDType.F32,
        _ => throw new ArgumentException($"Activation dtype '{activationDtype}' is not bf16, f16 or f32.", nameof(activationDtype)),
    };

    /// <summary>Bytes of one element of an activation dtype ("bf16", "f16": 2; "f32": 4).</summary>
    public static int ActivationBytes(string activationDtype) => activationDtype == "f32" ? 4 : 2;
}
