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
        string dir = BuildHarness.NewTempDirectory("taskcopy");
        // After resolve ran: where the stage tasks load from, and whether the copy is there.
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties(), """
              <Target Name="_ShowStageTasks" AfterTargets="ResolveLlmConfig">
                <Message Importance="high" Text="stage tasks: $(_LlmStageTasksAssembly) exists=$([System.IO.File]::Exists('$(_LlmStageTasksAssembly)'))" />
              </Target>
            """);
        var result = BuildHarness.Build(dir);
        result.AssertSucceeded();

        Match m = Regex.Match(result.Output, @"stage tasks: (?<path>\S+) exists=(?<exists>\w+)");
        Assert.IsTrue(m.Success, result.Output);
        string path = m.Groups["path"].Value;
        string expectedRoot = Path.Combine(BuildHarness.RepoRoot, "artifacts", "llmbuild-tasks") + Path.DirectorySeparatorChar;
        StringAssert.StartsWith(path, expectedRoot);
        StringAssert.Matches(Path.GetFileName(Path.GetDirectoryName(path))!, new Regex("^[0-9a-f]{32}$"), "a folder named by the build id");
        Assert.AreEqual("True", m.Groups["exists"].Value, "the copy exists while the stage tasks run");
        Assert.IsTrue(File.Exists(Path.Combine(dir, "bin", "tiny.bmodel")));
        Assert.IsFalse(Directory.Exists(Path.GetDirectoryName(path)), "a build that succeeds deletes its copy");
        Assert.IsFalse(result.Output.Contains("external task host", StringComparison.OrdinalIgnoreCase), "no task host");
    }
}
