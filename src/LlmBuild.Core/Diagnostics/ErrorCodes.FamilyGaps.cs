namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("A checkpoint holds the same tensor under both of a family's name layouts (e.g. gemma3's language_model.model.* and the newer model.language_model.*): which one to build is ambiguous.")]
    public const string MixedCheckpointLayout = "LLMB0161";
}
