namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("The model uses a feature the graph builder does not support (activation, RoPE mode, piece kind).")]
    public const string GraphUnsupported = "LLMB0301";
    [Code("A piece needs a weight its weight owner does not hold.")]
    public const string GraphMissingWeight = "LLMB0302";
    [Code("A weight's shape or the options do not fit the model's dimensions.")]
    public const string GraphBadShape = "LLMB0303";
    [Code("A graph was run with a missing or wrongly shaped input.")]
    public const string GraphBadInput = "LLMB0304";
    [Code("The reference model cannot run on this checkpoint.")]
    public const string ReferenceUnsupported = "LLMB0305";
    [Code("A mixture-of-experts model (qwen2_moe, qwen3_moe) cannot be split across devices (NumDevice > 1) by the built-in backend.")]
    public const string MoeTensorParallel = "LLMB0330";
}
