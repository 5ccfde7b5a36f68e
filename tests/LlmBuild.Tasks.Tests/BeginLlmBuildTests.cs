using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using LlmBuild.Tests;

namespace LlmBuild.Tasks.Tests;

/// <summary>
/// Issue 19, causes 7 and 8 at the task: the options stamp (formerly MSBuild's WriteLinesToFile, MSB3491 when obj/ is
/// read-only) is LLMB0901 naming the path, and the build lock is taken and released around it.
/// </summary>
[TestClass]
public sealed class BeginLlmBuildTests
{
    private static (BeginLlmBuild Task, FakeBuildEngine Engine) Create(string root, string stampDir, string build = "b1")
    {
        var engine = new FakeBuildEngine();
        var task = new BeginLlmBuild
        {
            BuildEngine = engine,
            LockFile = Path.Combine(root, "obj", "llmbuild.lock"),
            BuildId = build,
            LockTimeoutSeconds = 1,
            StampFile = Path.Combine(stampDir, "options.stamp"),
            OptionsHash = "h1",
            Options = [new TaskItem("SeqLength", new Dictionary<string, string> { ["Value"] = "64" }), new TaskItem("Chip", new Dictionary<string, string> { ["Value"] = "bm1684x" })],
        };
        return (task, engine);
    }

    private static string NewRoot() => Path.Combine(Path.GetTempPath(), "llmbuild-tasktests", Guid.NewGuid().ToString("N"));

    [TestMethod]
    public void WritesTheStampAndHoldsTheLock()
    {
        string root = NewRoot();
        string llm = Path.Combine(root, "obj", "Debug", "llm");
        var (task, engine) = Create(root, llm);
        Assert.IsTrue(task.Execute(), string.Join("\n", engine.Errors.Select(e => e.Message)));
        Assert.AreEqual("options-hash=h1\nSeqLength=64\nChip=bm1684x\n", File.ReadAllText(Path.Combine(llm, "options.stamp")));
        StringAssert.Contains(File.ReadAllText(task.LockFile), "build=b1");
        var stamp = DateTime.UtcNow.AddHours(-1);
        File.SetLastWriteTimeUtc(Path.Combine(llm, "options.stamp"), stamp);
        var (again, _) = Create(root, llm, "b1");
        Assert.IsTrue(again.Execute());
        Assert.AreEqual(stamp, File.GetLastWriteTimeUtc(Path.Combine(llm, "options.stamp")), "an unchanged stamp is not rewritten");
    }

    [TestMethod]
    public void AReadOnlyIntermediateFolderIsACodedErrorAndReleasesTheLock()
    {
        string root = NewRoot();
        string llm = Path.Combine(root, "obj", "Debug", "llm");
        using (new ReadOnlyFolder(llm))
        {
            var (task, engine) = Create(root, llm);
            Assert.IsFalse(task.Execute());
            BuildErrorEventArgs error = engine.Errors.Single();
            Assert.AreEqual("LLMB0901", error.Code);
            StringAssert.Contains(error.Message, Path.Combine(llm, "options.stamp"));
            Assert.IsFalse(File.Exists(task.LockFile), "a failed build leaves no lock");
        }
    }
}
