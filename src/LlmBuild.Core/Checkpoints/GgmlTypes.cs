namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// ggml's tensor element types, by the numeric id a GGUF tensor info stores. Ids 4, 5 and 31–33, 36–38 were
/// retired by ggml and never appear in a file LlmBuild reads.
/// </summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
}

/// <summary>Block geometry of the ggml types LlmBuild reads, and how each is presented to the pipeline.</summary>
public static class GgmlTypes
{
    /// <summary>
    /// Elements per block and bytes per block of every type LlmBuild can read; null for the others (their layout is
    /// not needed, so a file holding them is refused by name rather than half-understood).
    /// </summary>
    public static (int BlockElements, int BlockBytes)? Layout(GgmlType type) => type switch
    {
        GgmlType.F32 or GgmlType.I32 => (1, 4),
        GgmlType.F16 or GgmlType.BF16 or GgmlType.I16 => (1, 2),
        GgmlType.F64 or GgmlType.I64 => (1, 8),
        GgmlType.I8 => (1, 1),
        GgmlType.Q4_0 => (32, 18),
        GgmlType.Q4_1 => (32, 20),
        GgmlType.Q5_0 => (32, 22),
        GgmlType.Q5_1 => (32, 24),
        GgmlType.Q8_0 => (32, 34),
        GgmlType.Q2_K => (256, 84),
        GgmlType.Q3_K => (256, 110),
        GgmlType.Q4_K => (256, 144),
        GgmlType.Q5_K => (256, 176),
        GgmlType.Q6_K => (256, 210),
        _ => null,
    };

    /// <summary>True for the block-quantized types (dequantized to f32 when read as floats).</summary>
    public static bool IsBlockQuantized(GgmlType type) => Layout(type) is { BlockElements: > 1 };

    /// <summary>
    /// The dtype the checkpoint presents: plain float and integer types as themselves, block-quantized types as F32
    /// (their exact dequantization).
    /// </summary>
    public static TensorDType PresentedDType(GgmlType type) => type switch
    {
        GgmlType.F16 => TensorDType.F16,
        GgmlType.BF16 => TensorDType.BF16,
        GgmlType.F64 => TensorDType.F64,
        GgmlType.I8 => TensorDType.I8,
        GgmlType.I16 => TensorDType.I16,
        GgmlType.I32 => TensorDType.I32,
        GgmlType.I64 => TensorDType.I64,
        _ => TensorDType.F32,
    };

    /// <summary>ggml's name of a type ("Q4_K", or "type 99" for an id ggml never defined).</summary>
    public static string Name(GgmlType type) => Enum.IsDefined(type) ? type.ToString() : $"type {(uint)type}";
}
