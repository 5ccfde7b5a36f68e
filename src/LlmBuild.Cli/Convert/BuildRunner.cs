using System.Collections.Concurrent;
using System.ComponentModel;
using System.Diagnostics;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Cli.Convert;

/// <summary>The outcome of one <c>dotnet build</c>: its exit code, whether it reported a coded error itself, and the
/// file holding its whole output.</summary>
public sealed record BuildOutcome(int ExitCode, bool ReportedCodedError, string LogPath);

/// <summary>
/// Runs <c>dotnet build</c> on the generated project with minimal console output and feeds a progress display both
/// the console lines (warnings, errors, the resolve and verify summaries) and the stage tasks' structured progress
/// events, which they append to a temporary progress file named by the LlmBuildProgressFile property. The whole
/// output, including what the display leaves out (MSBuild's stack traces of a crashed task), is kept in the log file
/// the caller names (<see cref="ConvertPlan.BuildLogPath"/>).
/// </summary>
public static class BuildRunner
{
    /// <summary>Environment variables a parent MSBuild or test host may set that would steer the child build to other MSBuild files.</summary>
    private static readonly string[] InheritedMsBuildVariables = ["MSBuildExtensionsPath", "MSBUILD_EXE_PATH", "MSBuildSDKsPath", "MSBuildLoadMicrosoftTargetsReadOnly"];

    public static BuildOutcome Build(string projectPath, string logPath, IProgressDisplay display, BuildProgress progress)
    {
        var psi = new ProcessStartInfo(DotnetHost())
        {
            WorkingDirectory = Path.GetDirectoryName(projectPath)!,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string progressFile = Path.Combine(Path.GetTempPath(), $"llmbuild-progress-{Guid.NewGuid():N}.jsonl");
        foreach (string a in new[] { "build", projectPath, "-nologo", "-tl:off", "-v:m", "-clp:NoSummary", "-nodeReuse:false", "-p:UseSharedCompilation=false",
                     $"-p:LlmBuildProgressFile={progressFile}" })
            psi.ArgumentList.Add(a);
        foreach (string key in InheritedMsBuildVariables) psi.Environment.Remove(key);
        psi.Environment["DOTNET_NOLOGO"] = "1";

        using var outputs = new BlockingCollection<BuildOutput>();
        var log = new System.Text.StringBuilder();
        bool coded = false;
        int exitCode = -1;
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new Win32Exception("no process");
        }
        catch (Win32Exception e)
        {
            throw new LlmBuildException(ErrorCodes.BuildFailed,
                $"Cannot start '{psi.FileName} build': {e.Message}. Install the .NET SDK (10.0 or later) and make sure `dotnet` is on PATH.");
        }
        using (process)
        {
            void OnLine(string? line)
            {
                if (line is null) return;
                if (line.Contains(" error LLMB", StringComparison.Ordinal)) coded = true;
                lock (log) log.AppendLine(line);
                outputs.Add(new BuildOutput.Line(line));
            }
            process.OutputDataReceived += (_, e) => OnLine(e.Data);
            process.ErrorDataReceived += (_, e) => OnLine(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var events = new BuildEventReader(progressFile);
            void ForwardEvents()
            {
                foreach (var e in events.ReadNew()) outputs.Add(new BuildOutput.Event(e));
            }
            var waiter = Task.Run(() =>
            {
                // Poll the progress file while the build runs; the last read after exit catches the final events.
                while (!process.WaitForExit(100)) ForwardEvents();
                process.WaitForExit();
                ForwardEvents();
                exitCode = process.ExitCode;
                outputs.CompleteAdding();
            });
            try
            {
                display.Run(progress, outputs, () => exitCode == 0);
                waiter.GetAwaiter().GetResult();
            }
            finally
            {
                File.Delete(progressFile);
            }
        }
        AtomicFile.WriteAllTextIfChanged(logPath, log.ToString());
        return new BuildOutcome(exitCode, coded, logPath);
    }

    /// <summary>The dotnet that runs this tool when known (DOTNET_HOST_PATH), else the one on PATH.</summary>
    private static string DotnetHost()
    {
        string? host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        return !string.IsNullOrEmpty(host) && File.Exists(host) ? host : "dotnet";
    }
}
