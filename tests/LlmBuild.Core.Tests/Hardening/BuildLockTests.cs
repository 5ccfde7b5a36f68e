using System.Diagnostics;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>
/// Issue 19, cause 8: builds of one project are serialized by obj/llmbuild.lock, and cleaning up temporaries deletes only
/// those whose writer is gone. (Two real simultaneous builds: the integration test ConcurrentBuildTests.)
/// </summary>
[TestClass]
public sealed class BuildLockTests
{
    private static string LockPath() => Path.Combine(Path.GetTempPath(), $"lock-{Guid.NewGuid():N}", "llmbuild.lock");

    private static Process Sleeper() => Process.Start(new ProcessStartInfo("sleep", ["30"])) ?? throw new InvalidOperationException("cannot start sleep");

    private static BuildLock.Holder HolderOf(Process p, string build) => new(p.Id, Processes.StartedUtcTicks(p.Id), build);

    private static BuildLock.Holder Me(string build) => new(Environment.ProcessId, Processes.StartedUtcTicks(Environment.ProcessId), build);

    [TestMethod]
    public void ASecondBuildWaitsForALiveHolderThenFailsWithACodedError()
    {
        string path = LockPath();
        using Process other = Sleeper();
        try
        {
            BuildLock.Acquire(path, HolderOf(other, "first"), TimeSpan.Zero);
            var log = new List<string>();
            var watch = Stopwatch.StartNew();
            var e = Assert.ThrowsExactly<LlmBuildException>(() => BuildLock.Acquire(path, Me("second"), TimeSpan.FromSeconds(0.6), log.Add));
            Assert.IsTrue(watch.Elapsed >= TimeSpan.FromSeconds(0.6), "it waited");
            Assert.AreEqual(ErrorCodes.ProjectBuildLocked, e.Code);
            StringAssert.Contains(e.Message, $"process {other.Id}");
            Assert.AreEqual(path, e.File);
            Assert.AreEqual(1, log.Count(l => l.Contains("waiting for another build", StringComparison.Ordinal)), "one message while waiting");
        }
        finally { other.Kill(); }
    }

    [TestMethod]
    public void TheSecondBuildGetsTheLockWhenTheFirstReleasesIt()
    {
        string path = LockPath();
        using Process other = Sleeper();
        try
        {
            BuildLock.Acquire(path, HolderOf(other, "first"), TimeSpan.Zero);
            var release = Task.Run(async () => { await Task.Delay(400); BuildLock.Release(path, "first"); });
            BuildLock.Acquire(path, Me("second"), TimeSpan.FromSeconds(20));
            release.Wait();
            StringAssert.Contains(File.ReadAllText(path), "build=second");
            BuildLock.Release(path, "first"); // not the holder: nothing happens
            Assert.IsTrue(File.Exists(path));
            BuildLock.Release(path, "second");
            Assert.IsFalse(File.Exists(path));
        }
        finally { other.Kill(); }
    }

    [TestMethod]
    public void AKilledHoldersLockIsTakenOver()
    {
        string path = LockPath();
        using Process other = Sleeper();
        BuildLock.Acquire(path, HolderOf(other, "killed"), TimeSpan.Zero);
        other.Kill();
        other.WaitForExit();
        var watch = Stopwatch.StartNew();
        BuildLock.Acquire(path, Me("next"), TimeSpan.FromSeconds(30));
        Assert.IsTrue(watch.Elapsed < TimeSpan.FromSeconds(2));
        StringAssert.Contains(File.ReadAllText(path), "build=next");
    }

    [TestMethod]
    public void AKilledProcessNotYetCollectedByItsParentIsDead()
    {
        // sh starts a child that exits at once, then becomes a sleep that never collects it: a zombie.
        using var parent = Process.Start(new ProcessStartInfo("sh", ["-c", "sleep 0 & echo $!; exec sleep 20"]) { RedirectStandardOutput = true })!;
        try
        {
            int zombie = int.Parse(parent.StandardOutput.ReadLine()!, System.Globalization.CultureInfo.InvariantCulture);
            var until = DateTime.UtcNow.AddSeconds(10);
            while (!File.ReadAllText($"/proc/{zombie}/stat").Contains(") Z", StringComparison.Ordinal) && DateTime.UtcNow < until) Thread.Sleep(20);
            Assert.IsFalse(Processes.IsAlive(zombie));
            Assert.IsTrue(Processes.IsAlive(parent.Id));
        }
        finally { parent.Kill(); }
    }

    [TestMethod]
    public void ALockHeldByThisProcessForAnotherBuildIsStale()
    {
        // A reused MSBuild node that now runs this build cannot still be running the build that left the lock.
        string path = LockPath();
        BuildLock.Acquire(path, Me("cancelled"), TimeSpan.Zero);
        BuildLock.Acquire(path, Me("next"), TimeSpan.Zero);
        StringAssert.Contains(File.ReadAllText(path), "build=next");
    }

    [TestMethod]
    public void OnlyTemporariesOfDeadWritersAreDeleted()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"temps-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        using Process dead = Sleeper();
        dead.Kill();
        dead.WaitForExit();
        string live = Path.Combine(dir, $".block_0.bmodel.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        string stale = Path.Combine(dir, $".block_1.bmodel.{dead.Id}.{Guid.NewGuid():N}.tmp");
        File.WriteAllText(live, "");
        File.WriteAllText(stale, "");
        AtomicFile.DeleteStaleTemporaries(dir);
        Assert.IsTrue(File.Exists(live), "a live writer's temporary stays");
        Assert.IsFalse(File.Exists(stale), "a killed writer's temporary goes");
    }
}
