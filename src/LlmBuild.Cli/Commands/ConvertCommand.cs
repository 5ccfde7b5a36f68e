using System.CommandLine;
using System.Reflection;
using LlmBuild.Cli.Convert;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;

namespace LlmBuild.Cli.Commands;

/// <summary>
/// <c>llmbuild convert</c> (also the <c>llm_convert</c> command): llm_convert.py's command line on top of the
/// build. It checks the flags, writes &lt;out_dir&gt;/model.llmproj and builds it with <c>dotnet build</c>, so a
/// rerun of the same command is an incremental no-op.
/// </summary>
public static class ConvertCommand
{
    public static Command Create() => Create(out _);

    /// <summary>The command and its options, so a parse result can be read back (<see cref="ConvertFlags.OptionSet.Read"/>).</summary>
    public static Command Create(out ConvertFlags.OptionSet options)
    {
        options = ConvertFlags.CreateOptions();
        var command = new Command("convert", "Convert a Hugging Face checkpoint into a bmodel, with llm_convert.py's flags, as an incremental build.");
        foreach (var option in options.All) command.Options.Add(option);
        var set = options;
        command.SetAction(result => Run(set.Read(result), Console.Out));
        return command;
    }

    /// <summary>Runs a request; <paramref name="sdkDir"/> overrides where the SDK is found (tests).</summary>
    public static int Run(ConvertRequest request, TextWriter output, string? sdkDir = null)
    {
        if (request.ShowVersion)
        {
            output.Write(VersionText());
            return 0;
        }
        var plan = ConvertPlan.Create(request, Directory.GetCurrentDirectory());
        output.WriteLine($"out_dir: {plan.OutDir}");
        if (request.DryRun)
        {
            output.Write(plan.Describe());
            return 0;
        }

        string sdk = sdkDir ?? SdkLocator.Find();
        WriteProject(plan, ProjectFile.Generate(plan, sdk));
        var progress = new BuildProgress(plan.IntermediateDir);
        var outcome = BuildRunner.Build(plan.ProjectPath, plan.BuildLogPath, ProgressDisplays.ForConsole(), progress);
        if (outcome.ExitCode != 0)
        {
            if (outcome.ReportedCodedError) return 1;
            throw new LlmBuildException(ErrorCodes.BuildFailed,
                $"dotnet build of '{plan.ProjectPath}' failed (exit code {outcome.ExitCode}); its errors are above, its whole output (with any stack traces) is in '{outcome.LogPath}'.",
                plan.ProjectPath);
        }
        if (plan.Options.OnlyMlir)
        {
            output.WriteLine($"MLIR: {Path.Combine(plan.IntermediateDir, "mlir")}");
            return 0;
        }
        AtomicFile.WriteAllTextIfChanged(plan.ModelLogPath, BModelInspector.Text(plan.BModelPath));
        output.WriteLine($"bmodel: {plan.BModelPath}");
        output.WriteLine($"config: {plan.ConfigDir}");
        return 0;
    }

    /// <summary>Writes model.llmproj when its text changes; refuses to overwrite a project the user wrote.</summary>
    public static void WriteProject(ConvertPlan plan, string text)
    {
        if (File.Exists(plan.ProjectPath) && !File.ReadAllText(plan.ProjectPath).StartsWith(ProjectFile.Marker, StringComparison.Ordinal))
            throw new LlmBuildException(ErrorCodes.BadOutputDirectory,
                $"'{plan.ProjectPath}' exists and was not written by llmbuild convert. Choose another -o/--out_dir, or build that project with `dotnet build`.",
                plan.ProjectPath);
        AtomicFile.WriteAllTextIfChanged(plan.ProjectPath, text);
    }

    /// <summary>What -V prints: the tool's version and the versions of the formats it writes.</summary>
    public static string VersionText()
    {
        var assembly = typeof(ConvertCommand).Assembly;
        string version = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            ?? assembly.GetName().Version?.ToString() ?? "unknown";
        return $"""
            llmbuild {version}
            resolved.json format {ResolvedModel.FormatVersion}
            bmodel format {new BModelFile().Version}

            """;
    }
}
