using System.Diagnostics;
using System.Text;
using LlmBuild.Core.BModel;

namespace LlmBuild.Cli.Tests;

/// <summary>
/// The tool as users get it: packed into a local feed, installed with `dotnet tool install --tool-path`, run on the
/// example model (a full build, then the same command again as a no-op, then --dry_run), and the llm_convert alias.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class ToolPackageTests
{
    /// <summary>
    /// A configuration no other build uses, so packing never races `dotnet test`'s Debug build or the SDK's
    /// Release build of the task assembly in another test project.
    /// </summary>
    private const string PackConfiguration = "ToolTest";

    [TestMethod]
    [Timeout(1_500_000)]
    public void TheInstalledToolConvertsTheExampleThenDoesNothingOnARerun()
    {
        string root = TestPaths.NewTempDirectory("tool");
        string feed = Path.Combine(root, "feed");
        string tools = Path.Combine(root, "tools");
        string outDir = Path.Combine(root, "out");
        // A unique version so the machine's package cache never serves an older pack.
        string version = $"0.1.0-test{DateTime.UtcNow:yyyyMMddHHmmss}{Random.Shared.Next(1000):000}";
        string cli = Path.Combine(TestPaths.RepoRoot, "src", "LlmBuild.Cli", "LlmBuild.Cli.csproj");
        string[] pack = ["pack", cli, "-c", PackConfiguration, "-o", feed, $"-p:PackageVersion={version}", "-nologo", "-nodeReuse:false", "-p:UseSharedCompilation=false"];
        Run(TestPaths.RepoRoot, "dotnet", pack).AssertExit(0);
        Run(TestPaths.RepoRoot, "dotnet", [.. pack, "-p:LlmConvertAlias=true"]).AssertExit(0);
        foreach (string id in new[] { "LlmBuild.Cli", "LlmBuild.LlmConvert" })
            Run(root, "dotnet", ["tool", "install", "--tool-path", tools, "--add-source", feed, id, "--version", version]).AssertExit(0);
        string llmbuild = Path.Combine(tools, "llmbuild");
        string[] convert = ["convert", "-m", Path.Combine("examples", "tiny-qwen2", "checkpoint"), "-s", "64", "-q", "w4bf16", "-o", outDir];

        var first = Run(TestPaths.RepoRoot, llmbuild, convert);
        first.AssertExit(0);
        StringAssert.Contains(first.Output, $"out_dir: {outDir}");
        StringAssert.Contains(first.Output, "[5/5] combine");
        StringAssert.Contains(first.Output, "block_cache_3: done in");
        Assert.IsFalse(first.Output.Contains("building the task assembly from source", StringComparison.Ordinal), "the tool's own SDK is used:\n" + first.Output);
        string bmodel = Path.Combine(outDir, "checkpoint_w4bf16_seq64_bm1684x_1dev_static.bmodel");
        Assert.IsTrue(File.Exists(bmodel), first.Output);
        StringAssert.Contains(File.ReadAllText(Path.Combine(outDir, "model.llmproj")), Path.Combine(tools, ".store"), "the project imports the SDK inside the tool");
        CollectionAssert.AreEquivalent(
            Directory.GetFiles(TestPaths.ExampleCheckpoint).Select(Path.GetFileName).Where(f => !f!.EndsWith(".safetensors", StringComparison.Ordinal)).ToArray(),
            Directory.GetFiles(Path.Combine(outDir, "config")).Select(Path.GetFileName).ToArray());
        Assert.AreEqual(BModelInspector.Text(bmodel), File.ReadAllText(Path.Combine(outDir, "model.log")));
        var outputs = Times(outDir);

        var again = Run(TestPaths.RepoRoot, llmbuild, convert);
        again.AssertExit(0);
        Assert.IsFalse(again.Output.Contains(": running", StringComparison.Ordinal) || again.Output.Contains("done in", StringComparison.Ordinal),
            "the same command again is a no-op:\n" + again.Output);
        StringAssert.Contains(again.Output, $"bmodel: {bmodel}");
        CollectionAssert.AreEqual(outputs, Times(outDir), "no output was rewritten");

        var dry = Run(TestPaths.RepoRoot, llmbuild, [.. convert, "--dry_run"]);
        dry.AssertExit(0);
        StringAssert.Contains(dry.Output, "=== LlmBuild resolved configuration ===");
        StringAssert.Contains(dry.Output, "pieces                 11:");
        CollectionAssert.AreEqual(outputs, Times(outDir), "a dry run writes nothing");

        // llm_convert is `llmbuild convert`: its flags directly, the same checks, the same coded errors.
        string llmConvert = Path.Combine(tools, "llm_convert");
        var alias = Run(TestPaths.RepoRoot, llmConvert, [.. convert[1..], "--dry_run"]);
        alias.AssertExit(0);
        StringAssert.Contains(alias.Output, "checkpoint_w4bf16_seq64_bm1684x_1dev_static.bmodel");
        var bad = Run(TestPaths.RepoRoot, llmConvert, [.. convert[1..], "-q", "int4"]);
        bad.AssertExit(1);
        StringAssert.Contains(bad.Output, "error LLMB0001: -q/--quantize: Property Quantize='int4'");
        StringAssert.StartsWith(Run(root, llmConvert, ["-V"]).Output, $"llmbuild {version}");
    }

    /// <summary>Write times of the outputs (the build's obj/ aside: restore may touch its own files).</summary>
    private static string[] Times(string dir) =>
        Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
            .Where(f => !Path.GetRelativePath(dir, f).StartsWith("obj", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .Select(f => $"{Path.GetRelativePath(dir, f)} {File.GetLastWriteTimeUtc(f).Ticks}")
            .ToArray();

    private sealed record Result(int ExitCode, string Output, string Command)
    {
        public void AssertExit(int expected)
        {
            if (ExitCode != expected) Assert.Fail($"{Command} exited with {ExitCode}, expected {expected}:\n{(Output.Length > 8000 ? "…" + Output[^8000..] : Output)}");
        }
    }

    /// <summary>Runs a program as a user would: nothing inherited from the test host's own MSBuild or test platform.</summary>
    private static Result Run(string dir, string program, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(program)
        {
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        foreach (string key in psi.Environment.Keys.ToList())
            if (key.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || key.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase))
                psi.Environment.Remove(key);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        string command = $"{Path.GetFileName(program)} {string.Join(' ', args)}";
        using var process = Process.Start(psi)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(TimeSpan.FromMinutes(10)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{command} timed out:\n{output}");
        }
        process.WaitForExit();
        lock (output) return new Result(process.ExitCode, output.ToString(), command);
    }
}
