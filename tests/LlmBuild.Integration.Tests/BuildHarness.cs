using LlmBuild.Tests;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace LlmBuild.Integration.Tests;

[AttributeUsage(AttributeTargets.Assembly)]
public sealed class RepositoryRootAttribute(string path) : Attribute
{
    public string Path { get; } = path;
}

/// <summary>The outcome of one `dotnet` invocation.</summary>
public sealed record BuildResult(int ExitCode, string Output)
{
    private static readonly Regex Skipped = new("Skipping target \"(?<t>[A-Za-z]+)\" because all output files are up-to-date", RegexOptions.Compiled);

    /// <summary>Stage targets MSBuild skipped as up to date.</summary>
    public IReadOnlySet<string> SkippedTargets => Skipped.Matches(Output).Select(m => m.Groups["t"].Value).ToHashSet();

    /// <summary>Stage tasks that ran (each logs "&lt;Stage&gt;: running" when it starts).</summary>
    public IReadOnlySet<string> RanTasks => Stages.All.Where(s => Output.Contains($"{s}: running", StringComparison.Ordinal)).ToHashSet();

    /// <summary>The pieces a stage task rebuilt (it logs "name: done in ..." per piece).</summary>
    public IReadOnlySet<string> DonePieces =>
        Regex.Matches(Output, @"^\s*(?<p>[a-z_0-9]+): done in", RegexOptions.Multiline).Select(m => m.Groups["p"].Value).ToHashSet();

    public void AssertSucceeded()
    {
        if (ExitCode == 0) return;
        // The error lines first: a log shown only in part still shows why the build failed.
        var errors = Output.Split('\n').Where(l => l.Contains(": error ", StringComparison.Ordinal)).Distinct().Take(10);
        Assert.Fail($"dotnet exited with {ExitCode}: {string.Join("\n", errors)}\n{Tail(Output, 6000)}");
    }

    private static string Tail(string s, int n) => s.Length <= n ? s : "…" + s[^n..];
}

public static class Stages
{
    public const string Resolve = "ResolveLlmConfig";
    public const string Quantize = "QuantizeLlmWeights";
    public const string Export = "ExportLlmMlir";
    public const string Compile = "CompileLlmPieces";
    public const string Combine = "CombineLlmBModel";
    public const string Verify = "VerifyLlmBuild";
    public static readonly string[] All = [Resolve, Quantize, Export, Compile, Combine, Verify];
}

/// <summary>Creates example projects in temporary folders and runs the real `dotnet build` on them.</summary>
public static class BuildHarness
{
    public static string RepoRoot { get; } = Path.GetFullPath(
        typeof(BuildHarness).Assembly.GetCustomAttributes(typeof(RepositoryRootAttribute), false).Cast<RepositoryRootAttribute>().Single().Path);

    public static string ExampleCheckpoint => Path.Combine(RepoRoot, "examples", "tiny-qwen2", "checkpoint");

    private static readonly List<string> TestDirectories = new();

    /// <summary>
    /// A new folder in the test run's temporary folder. It is deleted by <see cref="DeleteTestDirectories"/> (each test
    /// class's cleanup) unless <paramref name="keepUntilRunEnds"/>: a build is about 170 MB, and a run makes twenty.
    /// </summary>
    public static string NewTempDirectory(string label, bool keepUntilRunEnds = false)
    {
        string dir = Path.Combine(Path.GetTempPath(), "builds", $"{label}-{Guid.NewGuid():N}"[..(label.Length + 9)]);
        Directory.CreateDirectory(dir);
        if (!keepUntilRunEnds) lock (TestDirectories) TestDirectories.Add(dir);
        return dir;
    }

    /// <summary>Deletes the folders tests made since the last call (the tests of this assembly run one at a time).</summary>
    public static void DeleteTestDirectories()
    {
        lock (TestDirectories)
        {
            foreach (string dir in TestDirectories) TestRunTemp.DeleteTree(dir);
            TestDirectories.Clear();
        }
    }

    /// <summary>Default properties of the test model: the example checkpoint at w4bf16, a short sequence.</summary>
    public static Dictionary<string, string> DefaultProperties() => new()
    {
        ["ModelPath"] = ExampleCheckpoint,
        ["SeqLength"] = "64",
        ["Quantize"] = "w4bf16",
        ["QGroupSize"] = "64",
        ["Chip"] = "bm1684x",
        ["LlmModelName"] = "tiny",
        // Explicit, so a TPU-MLIR installation on the machine's PATH never switches these builds to the tpu-mlir backend.
        ["LlmCodegenBackend"] = "builtin",
    };

    /// <summary>Writes dir/model.llmproj importing the repository's SDK by path; <paramref name="afterSdk"/> follows the SDK's targets.</summary>
    public static string WriteProject(string dir, IReadOnlyDictionary<string, string> properties, string afterSdk = "")
    {
        string sdk = Path.Combine(RepoRoot, "build", "LlmBuild.Sdk", "Sdk");
        var sb = new StringBuilder();
        sb.AppendLine("<Project>");
        sb.AppendLine($"  <Import Project=\"{Path.Combine(sdk, "Sdk.props")}\" />");
        sb.AppendLine("  <PropertyGroup>");
        foreach (var (k, v) in properties.OrderBy(p => p.Key, StringComparer.Ordinal)) sb.AppendLine($"    <{k}>{v}</{k}>");
        sb.AppendLine("  </PropertyGroup>");
        sb.AppendLine($"  <Import Project=\"{Path.Combine(sdk, "Sdk.targets")}\" />");
        if (afterSdk.Length > 0) sb.AppendLine(afterSdk);
        sb.AppendLine("</Project>");
        string path = Path.Combine(dir, "model.llmproj");
        File.WriteAllText(path, sb.ToString());
        return path;
    }

    public static BuildResult Build(string dir, params string[] extra) =>
        Dotnet(dir, ["build", "model.llmproj", .. extra]);

    /// <summary>Runs dotnet with plain, normal-verbosity console output and no node reuse.</summary>
    /// <param name="environment">Variables to set (or override, e.g. PATH) in the build's environment.</param>
    public static BuildResult Dotnet(string dir, IEnumerable<string> args, TimeSpan? timeout = null, bool buildFlags = true,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = StartInfo(dir, args, buildFlags);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        using var process = Process.Start(psi)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(10)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"dotnet {string.Join(' ', args)} timed out:\n{output}");
        }
        process.WaitForExit();
        lock (output) return new BuildResult(process.ExitCode, output.ToString());
    }

    public static ProcessStartInfo StartInfo(string dir, IEnumerable<string> args, bool buildFlags = true)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        if (buildFlags)
            foreach (string a in new[] { "-nologo", "-tl:off", "-v:n", "-nodeReuse:false", "-p:UseSharedCompilation=false" }) psi.ArgumentList.Add(a);
        // Run as a user would: nothing inherited from the test host's own MSBuild.
        foreach (string key in psi.Environment.Keys.ToList())
            if (key.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || key.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase))
                psi.Environment.Remove(key);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        return psi;
    }

    /// <summary>sha256 of every file under dir (relative path → hash), skipping nothing.</summary>
    public static SortedDictionary<string, string> HashTree(string dir)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (!Directory.Exists(dir)) return result;
        foreach (string f in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
            result[Path.GetRelativePath(dir, f)] = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)));
        return result;
    }

    /// <summary>Write times of every file under dir (relative path → ticks).</summary>
    public static SortedDictionary<string, long> TimeTree(string dir)
    {
        var result = new SortedDictionary<string, long>(StringComparer.Ordinal);
        if (!Directory.Exists(dir)) return result;
        foreach (string f in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
            result[Path.GetRelativePath(dir, f)] = File.GetLastWriteTimeUtc(f).Ticks;
        return result;
    }

    /// <summary>Copies a directory tree keeping write times (so a copied build stays up to date).</summary>
    public static void CopyTree(string from, string to)
    {
        foreach (string d in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, d)));
        foreach (string f in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, f));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(f, target, overwrite: true);
            File.SetLastWriteTimeUtc(target, File.GetLastWriteTimeUtc(f));
        }
    }
}
