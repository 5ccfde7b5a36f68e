namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("The command line cannot be parsed: an unknown flag, a missing value or an unexpected argument.")]
    public const string BadCommandLine = "LLMB0701";
    [Code("The LlmBuild SDK (Sdk.props, Sdk.targets, the stage targets) cannot be found next to the tool or in a repository checkout.")]
    public const string SdkNotFound = "LLMB0702";
    [Code("`dotnet build` could not be started, or it failed without reporting a coded error.")]
    public const string BuildFailed = "LLMB0703";
    [Code("The output directory cannot be used (it is a file, or it holds a model.llmproj not written by llmbuild convert).")]
    public const string BadOutputDirectory = "LLMB0704";
    [Code("A command-line option has a value outside its range (e.g. --max-new-tokens below 1).")]
    public const string InvalidOptionValue = "LLMB0710";
    [Code("Interactive `llmbuild run` found standard input closed; give -p PROMPT, or run it from a terminal or with input piped in.")]
    public const string StandardInputClosed = "LLMB0711";
    [Code("Standard output is closed, or the program reading it went away, so the command cannot print its results.")]
    public const string StandardOutputClosed = "LLMB0712";
}
