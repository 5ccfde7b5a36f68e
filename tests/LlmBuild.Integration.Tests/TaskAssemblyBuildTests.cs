using System.Reflection.PortableExecutable;
using System.Text.RegularExpressions;

namespace LlmBuild.Integration.Tests;

/// <summary>
/// Issue 15: with the repository's SDK the stage tasks load in-process from a copy of the task assembly private to the
/// build (a reused MSBuild node keeps the first assembly it loaded from a path), and a build that succeeds deletes it.
/// </summary>
[TestClass]
public sealed class TaskAssemblyBuildTests
{
    [TestCleanup]
    public void DeleteTestDirectories() => BuildHarness.DeleteTestDirectories();

    [TestMethod]
    public void StageTasksLoadFromACopyOfTheirOwnThatTheBuildDeletes()
    {
        // After resolve ran: where the stage tasks load from, and whether the copy is there.
        var (dir, output, m) = BuildShowing("taskcopy", "stage tasks: $(_LlmStageTasksAssembly) exists=$([System.IO.File]::Exists('$(_LlmStageTasksAssembly)'))",
            @"stage tasks: (?<path>\S+) exists=(?<exists>\w+)");
        string path = m.Groups["path"].Value;
        string expectedRoot = Path.Combine(BuildHarness.RepoRoot, "artifacts", "llmbuild-tasks") + Path.DirectorySeparatorChar;
        StringAssert.StartsWith(path, expectedRoot);
        StringAssert.Matches(Path.GetFileName(Path.GetDirectoryName(path))!, new Regex("^[0-9a-f]{32}$"), "a folder named by the build id");
        Assert.AreEqual("True", m.Groups["exists"].Value, "the copy exists while the stage tasks run");
        Assert.IsTrue(File.Exists(Path.Combine(dir, "bin", "tiny.bmodel")));
        Assert.IsFalse(Directory.Exists(Path.GetDirectoryName(path)), "a build that succeeds deletes its copy");
        Assert.IsFalse(output.Contains("external task host", StringComparison.OrdinalIgnoreCase), "no task host");
    }

    /// <summary>
    /// Issue 15: the task assembly the SDK loads is published ReadyToRun (precompiled native code beside the IL), Core
    /// and the packages with it, so a build does not JIT-compile Core again; the native library of a package is in the
    /// folder (a runtime-specific publish puts it beside the assemblies).
    /// </summary>
    [TestMethod]
    public void TheSdkLoadsAReadyToRunTaskAssembly()
    {
        var (_, _, m) = BuildShowing("taskr2r", "task assembly: $(LlmBuildTasksAssembly)", @"task assembly: (?<path>\S+)");
        string published = Path.GetDirectoryName(m.Groups["path"].Value)!;
        Assert.AreEqual(Path.Combine(BuildHarness.RepoRoot, "src", "LlmBuild.Tasks", "bin", "Release", "net10.0", "sdk-tasks"), published);
        foreach (string name in new[] { "LlmBuild.Tasks.dll", "LlmBuild.Core.dll", "System.Numerics.Tensors.dll" })
            Assert.IsTrue(IsReadyToRun(Path.Combine(published, name)), name + " is a ReadyToRun image");
        Assert.IsTrue(Directory.EnumerateFiles(published, "*SkiaSharp*").Any(f => !f.EndsWith(".dll", StringComparison.Ordinal)),
            "the package's native library is beside the assemblies");
    }

    /// <summary>
    /// Builds the tiny model in a new folder with a message printed once resolve ran (MSBuild expressions expanded), and
    /// returns the folder, the build's output and the match of <paramref name="pattern"/> in it.
    /// </summary>
    private static (string Dir, string Output, Match Shown) BuildShowing(string name, string message, string pattern)
    {
        string dir = BuildHarness.NewTempDirectory(name);
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties(), $"""
              <Target Name="_ShowAfterResolve" AfterTargets="ResolveLlmConfig">
                <Message Importance="high" Text="{message}" />
              </Target>
            """);
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();
        Match m = Regex.Match(result.Output, pattern);
        Assert.IsTrue(m.Success, result.Output);
        return (dir, result.Output, m);
    }

    /// <summary>A ReadyToRun image: its CLI header names a native code header (an IL-only assembly's is empty).</summary>
    public static bool IsReadyToRun(string assembly)
    {
        using var pe = new PEReader(File.OpenRead(assembly));
        return pe.PEHeaders.CorHeader is { ManagedNativeHeaderDirectory.Size: > 0 };
    }

    /// <summary>The check itself: an IL-only assembly (this test assembly) is not one.</summary>
    [TestMethod]
    public void AnIlOnlyAssemblyIsNotReadyToRun() =>
        Assert.IsFalse(IsReadyToRun(typeof(TaskAssemblyBuildTests).Assembly.Location));
}
