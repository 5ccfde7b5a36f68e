namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("A file could not be written.")]
    public const string WriteFailed = "LLMB0901";
    [Code("A file could not be read.")]
    public const string ReadFailed = "LLMB0902";
}
