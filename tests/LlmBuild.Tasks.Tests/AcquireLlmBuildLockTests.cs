using LlmBuild.Core.IO;

namespace LlmBuild.Tasks.Tests;

/// <summary>
/// The lock a build takes only once a stage has work (issue 15: a no-op rebuild takes no lock and runs no task): taken
/// when free, a no-op when this build holds it, and refused (LLMB0437, lock released) when the options stamp changed
/// since the build compared it without the lock.
/// </summary>
[TestClass]
public sealed class AcquireLlmBuildLockTests
{
    private static string NewRoot() => Path.Combine(Path.GetTempPath(), "llmbuild-tasktests", Guid.NewGuid().ToString("N"));

    private static (AcquireLlmBuildLock Task, FakeBuildEngine Engine) Create(string root, string build, string stampTicks)
    {
        var engine = new FakeBuildEngine();
        var task = new AcquireLlmBuildLock
        {
            BuildEngine = engine,
            LockFile = Path.Combine(root, "obj", "llmbuild.lock"),
            BuildId = build,
            LockTimeoutSeconds = 0,
            StampFile = Path.Combine(root, "options.stamp"),
            StampTicks = stampTicks,
        };
        return (task, engine);
    }

    private static string Stamp(string root, string text = "options-hash=1\n")
    {
        Directory.CreateDirectory(root);
        string stamp = Path.Combine(root, "options.stamp");
        File.WriteAllText(stamp, text);
        return File.GetLastWriteTimeUtc(stamp).ToFileTimeUtc().ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    [TestMethod]
    public void TakesAFreeLockAndKeepsItForTheSameBuild()
    {
        string root = NewRoot();
        string ticks = Stamp(root);
        var (task, engine) = Create(root, "b1", ticks);
        Assert.IsTrue(task.Execute(), string.Join("\n", engine.Errors.Select(e => e.Message)));
        Assert.IsTrue(BuildLock.IsHeldBy(task.LockFile, "b1"));
        StringAssert.Contains(File.ReadAllText(task.LockFile), $"pid={Environment.ProcessId}\n", "in-process: the lock names the MSBuild process");
        var lockTime = File.GetLastWriteTimeUtc(task.LockFile);

        var (again, _) = Create(root, "b1", ticks);
        Assert.IsTrue(again.Execute());
        Assert.AreEqual(lockTime, File.GetLastWriteTimeUtc(task.LockFile), "taking it again in the same build writes nothing");
    }

    [TestMethod]
    public void AStampRewrittenSinceTheBuildReadItStopsTheBuildAndReleasesTheLock()
    {
        string root = NewRoot();
        string ticks = Stamp(root);
        File.SetLastWriteTimeUtc(Path.Combine(root, "options.stamp"), DateTime.UtcNow.AddMinutes(1)); // another build wrote it
        var (task, engine) = Create(root, "b1", ticks);
        Assert.IsFalse(task.Execute());
        Assert.AreEqual("LLMB0437", engine.Errors.Single().Code);
        StringAssert.Contains(engine.Errors.Single().Message, Path.Combine(root, "options.stamp"));
        Assert.IsFalse(File.Exists(task.LockFile), "the lock is released");
    }

    [TestMethod]
    public void ALockHeldByAnotherLiveBuildIsWaitedForThenRefused()
    {
        string root = NewRoot();
        string ticks = Stamp(root);
        // Process 1 is alive for the whole test and is not this process: its lock is live.
        Directory.CreateDirectory(Path.Combine(root, "obj"));
        File.WriteAllText(Path.Combine(root, "obj", "llmbuild.lock"), new BuildLock.Holder(1, Processes.StartedUtcTicks(1), "other").ToText());
        var (task, engine) = Create(root, "b1", ticks);
        Assert.IsFalse(task.Execute());
        Assert.AreEqual("LLMB0050", engine.Errors.Single().Code);
        Assert.IsTrue(BuildLock.IsHeldBy(task.LockFile, "other"), "the other build keeps its lock");
    }
}
