using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Convert;

/// <summary>
/// Finds the LlmBuild SDK the generated project imports. The tool package carries it next to the tool's
/// assembly (<c>sdk/Sdk</c>, <c>sdk/targets</c>, <c>sdk/tasks/net10.0</c>: the SDK package's layout); a build
/// from a repository checkout uses the repository's <c>build/LlmBuild.Sdk/Sdk</c>, whose targets build the task
/// assembly from source. <c>LLMBUILD_SDK_DIR</c> overrides both.
/// </summary>
public static class SdkLocator
{
    public const string EnvironmentVariable = "LLMBUILD_SDK_DIR";

    /// <summary>The folder holding Sdk.props and Sdk.targets.</summary>
    public static string Find() => Find(AppContext.BaseDirectory, Environment.GetEnvironmentVariable(EnvironmentVariable));

    public static string Find(string toolDirectory, string? overrideDirectory)
    {
        if (!string.IsNullOrWhiteSpace(overrideDirectory))
        {
            string dir = Path.GetFullPath(overrideDirectory);
            return IsSdk(dir) ? dir : throw new LlmBuildException(ErrorCodes.SdkNotFound,
                $"{EnvironmentVariable}='{overrideDirectory}' does not hold Sdk.props and Sdk.targets. Point it at the SDK's Sdk folder or unset it.");
        }
        string packaged = Path.Combine(toolDirectory, "sdk", "Sdk");
        if (IsSdk(packaged)) return packaged;
        for (var d = new DirectoryInfo(toolDirectory); d is not null; d = d.Parent)
        {
            string repo = Path.Combine(d.FullName, "build", "LlmBuild.Sdk", "Sdk");
            if (IsSdk(repo) && File.Exists(Path.Combine(d.FullName, "targets", "LlmBuild.Stages.targets"))) return repo;
        }
        throw new LlmBuildException(ErrorCodes.SdkNotFound,
            $"The LlmBuild SDK is neither in '{packaged}' (the tool package) nor in a repository checkout above '{toolDirectory}'. Reinstall the tool, or set {EnvironmentVariable} to the SDK's Sdk folder.");
    }

    private static bool IsSdk(string dir) => File.Exists(Path.Combine(dir, "Sdk.props")) && File.Exists(Path.Combine(dir, "Sdk.targets"));
}
