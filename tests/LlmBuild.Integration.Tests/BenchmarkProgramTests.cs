using System.Diagnostics;

namespace LlmBuild.Integration.Tests;

/// <summary>
/// The benchmark program builds models in-process with the stage functions, so a change of a stage's files can break it
/// without breaking a build (it once kept writing owner weights where the write-once layout no longer reads them). Its
/// runtime mode on the example model runs here; the timings it prints are not checked.
/// </summary>
[TestClass]
public sealed class BenchmarkProgramTests
{
    [TestCleanup]
    public void DeleteTestDirectories() => BuildHarness.DeleteTestDirectories();

    [TestMethod]
    public void RuntimeBenchmarkBuildsAndRunsTheExample()
    {
        string? dll = new[] { "Debug", "Release" }
            .Select(c => Path.Combine(BuildHarness.RepoRoot, "bench", "LlmBuild.Benchmarks", "bin", c, "net10.0", "LlmBuild.Benchmarks.dll"))
            .FirstOrDefault(File.Exists);
        Assert.IsNotNull(dll, "The benchmark program is not built: build LlmBuild.sln (./test.sh does) and run again.");
        // A checkpoint folder that does not exist: the benchmark measures the example only, then says how to get the larger model.
        string absent = Path.Combine(BuildHarness.NewTempDirectory("bench"), "no-checkpoint");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = BuildHarness.RepoRoot };
        foreach (string a in new[] { dll, "runtime", absent }) psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi)!;
        var errors = p.StandardError.ReadToEndAsync();
        var reading = p.StandardOutput.ReadToEndAsync();
        // A hang is a failure, not a stuck test run.
        if (!p.WaitForExit(TimeSpan.FromMinutes(10))) { p.Kill(entireProcessTree: true); Assert.Fail("the benchmark did not finish in 10 minutes"); }
        string output = reading.Result;
        Assert.AreEqual(0, p.ExitCode, $"benchmark failed:\n{output}\n{errors.Result}");
        Assert.AreEqual(3, output.Split('\n').Count(l => l.StartsWith("tiny-qwen2 (example)", StringComparison.Ordinal)), output);
        Assert.AreEqual(3, output.Split('\n').Count(l => l.TrimStart().StartsWith("decode:", StringComparison.Ordinal)), output);
        StringAssert.Contains(output, "run the `weights` benchmark first");
    }
}
