using System.CommandLine;

namespace LlmBuild.Cli.Commands;

/// <summary>
/// <c>--no-verify-weights</c> for the commands that open a bmodel (run, logits, inspect). By default loading checks every
/// coefficient blob against its sha256 check code, so a damaged file is LLMB0408 instead of wrong answers; the check
/// reads every weight byte once (about 6 ms per MiB on the development machine, so seconds for a 0.5B model), which a
/// user who just built or checked the file may skip.
/// </summary>
internal static class NoVerifyWeightsOption
{
    public static Option<bool> Create() => new("--no-verify-weights")
    {
        Description = "Skip checking the weights against the bmodel's sha256 check codes while loading (faster; a damaged file then gives wrong outputs instead of LLMB0408).",
    };
}
