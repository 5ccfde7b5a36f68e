using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>Sizes and names of <see cref="TensorDType"/>.</summary>
public static class DTypes
{
    public static int Size(TensorDType t) => t switch
    {
        TensorDType.F64 or TensorDType.I64 => 8,
        TensorDType.F32 or TensorDType.I32 => 4,
        TensorDType.F16 or TensorDType.BF16 or TensorDType.I16 => 2,
        _ => 1,
    };

    public static bool IsFloat(TensorDType t) => t is TensorDType.F32 or TensorDType.F16 or TensorDType.BF16 or TensorDType.F64 or TensorDType.F8E4M3 or TensorDType.F8E5M2;

    /// <summary>The safetensors spelling of a dtype, or null when safetensors has no such dtype.</summary>
    public static TensorDType? FromSafetensors(string name) => name switch
    {
        "F32" => TensorDType.F32,
        "F16" => TensorDType.F16,
        "BF16" => TensorDType.BF16,
        "F64" => TensorDType.F64,
        "I64" => TensorDType.I64,
        "I32" => TensorDType.I32,
        "I16" => TensorDType.I16,
        "I8" => TensorDType.I8,
        "U8" => TensorDType.U8,
        "BOOL" => TensorDType.Bool,
        "F8_E4M3" => TensorDType.F8E4M3,
        "F8_E5M2" => TensorDType.F8E5M2,
        _ => null,
    };

    public static string ToSafetensors(TensorDType t) => t switch
    {
        TensorDType.Bool => "BOOL",
        TensorDType.F8E4M3 => "F8_E4M3",
        TensorDType.F8E5M2 => "F8_E5M2",
        _ => t.ToString(),
    };

    internal static void RequireFloat(TensorInfo info)
    {
        if (!IsFloat(info.DType))
            throw new LlmBuildException(ErrorCodes.UnsupportedTensorDType,
                $"Tensor '{info.Name}' in '{info.File}' has dtype {info.DType}, but a float tensor (F32, F16, BF16, F64, F8_E4M3, F8_E5M2) is expected here.", info.File);
    }
}
