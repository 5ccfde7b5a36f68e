namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("Another build of the same project with different options changed its options stamp while this build decided, without the build lock, what was up to date; this build stops rather than finish on a mix of the two. Build again.")]
    public const string ConcurrentOptionsChange = "LLMB0437";
}
