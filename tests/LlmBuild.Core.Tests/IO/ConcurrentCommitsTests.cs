using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Tests.Checkpoints;

namespace LlmBuild.Core.Tests.IO;

/// <summary>
/// Durable writes inside <see cref="ConcurrentCommits.Run"/>: fsynced on I/O threads, each before its own rename, and all
/// in place when Run returns. (That the fsync comes before the rename is checked on a real build with strace: every
/// durable rename in obj/ and bin/ follows its temporary's fsync.)
/// </summary>
[TestClass]
public sealed class ConcurrentCommitsTests
{
    [TestMethod]
    public void EveryFileIsInPlaceWithItsContentWhenRunReturns()
    {
        string dir = TestFiles.TempDir();
        ConcurrentCommits.Run(() => Parallel.For(0, 60, i =>
        {
            AtomicFile.WriteAllText(Path.Combine(dir, $"f{i}.txt"), $"file {i}\n");
            AtomicFile.WriteAllBytes(Path.Combine(dir, "sub", $"g{i}.bin"), new byte[i * 1000]);
        }));
        for (int i = 0; i < 60; i++)
        {
            Assert.AreEqual($"file {i}\n", File.ReadAllText(Path.Combine(dir, $"f{i}.txt")));
            Assert.AreEqual(i * 1000L, new FileInfo(Path.Combine(dir, "sub", $"g{i}.bin")).Length);
        }
        Assert.AreEqual(0, Directory.GetFiles(dir, "*.tmp", SearchOption.AllDirectories).Length, "no temporary is left");
    }

    [TestMethod]
    public void TheLastWriteOfAPathWinsAndADeleteWaitsForItsCommit()
    {
        string dir = TestFiles.TempDir();
        string a = Path.Combine(dir, "a.txt"), b = Path.Combine(dir, "b.txt");
        ConcurrentCommits.Run(() =>
        {
            for (int i = 0; i < 20; i++) AtomicFile.WriteAllText(a, $"version {i}\n");
            AtomicFile.WriteAllText(b, "gone\n");
            AtomicFile.Delete(b);
            Assert.IsFalse(File.Exists(b), "the delete came after the pending commit, not before it");
            AtomicFile.WriteAllText(Path.Combine(dir, "c.txt"), "c\n");
            AtomicFile.WaitUntilInPlace(Path.Combine(dir, "c.txt"));
            Assert.AreEqual("c\n", File.ReadAllText(Path.Combine(dir, "c.txt")), "WaitUntilInPlace returns once the file is at its path");
        });
        Assert.AreEqual("version 19\n", File.ReadAllText(a));
        Assert.IsFalse(File.Exists(b));
    }

    [TestMethod]
    public void AFailedRenameIsACodedErrorNamingTheFileAndLeavesNoTemporary()
    {
        string dir = TestFiles.TempDir();
        string blocked = Path.Combine(dir, "out.txt");
        // A non-empty folder where the file should go: the rename onto it fails.
        Directory.CreateDirectory(blocked);
        File.WriteAllText(Path.Combine(blocked, "keep"), "x");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ConcurrentCommits.Run(() =>
        {
            AtomicFile.WriteAllText(Path.Combine(dir, "fine.txt"), "fine\n");
            AtomicFile.WriteAllText(blocked, "never\n");
        }));
        Assert.AreEqual(ErrorCodes.WriteFailed, e.Code);
        Assert.AreEqual(blocked, e.File);
        Assert.AreEqual("fine\n", File.ReadAllText(Path.Combine(dir, "fine.txt")), "the other commits still complete");
        Assert.AreEqual(0, Directory.GetFiles(dir, "*.tmp", SearchOption.AllDirectories).Length);
    }

    [TestMethod]
    public void AFailingBodyStillPutsWhatItWroteInPlaceBeforeItsErrorPropagates()
    {
        string dir = TestFiles.TempDir();
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ConcurrentCommits.Run(() =>
        {
            AtomicFile.WriteAllText(Path.Combine(dir, "done.txt"), "done\n");
            throw new LlmBuildException(ErrorCodes.InvalidProperty, "the piece failed");
        }));
        Assert.AreEqual("the piece failed", e.Message.Replace(ErrorCodes.InvalidProperty + ": ", "", StringComparison.Ordinal));
        Assert.AreEqual("done\n", File.ReadAllText(Path.Combine(dir, "done.txt")));
        Assert.AreEqual(0, Directory.GetFiles(dir, "*.tmp").Length);
    }

    [TestMethod]
    public void NonDurableWritesAndWritesOutsideRunAreInPlaceAtOnce()
    {
        string dir = TestFiles.TempDir();
        AtomicFile.WriteAllText(Path.Combine(dir, "outside.txt"), "o\n");
        Assert.AreEqual("o\n", File.ReadAllText(Path.Combine(dir, "outside.txt")));
        ConcurrentCommits.Run(() =>
        {
            AtomicFile.WriteAllText(Path.Combine(dir, "sidecar.txt"), "s\n", durable: false);
            Assert.AreEqual("s\n", File.ReadAllText(Path.Combine(dir, "sidecar.txt")));
        });
    }

    [TestMethod]
    public void AnActionAfterAFileIsInPlaceRunsRightAfterItsRenameOrAtOnce()
    {
        string dir = TestFiles.TempDir();
        string npz = Path.Combine(dir, "w.npz"), sidecar = npz + ".identity";
        bool sawFile = false;
        ConcurrentCommits.Run(() =>
        {
            AtomicFile.WriteAllText(npz, "weights\n");
            ConcurrentCommits.AfterInPlace(npz, () =>
            {
                sawFile = File.ReadAllText(npz) == "weights\n";
                AtomicFile.WriteAllText(sidecar, "id\n", durable: false);
            });
            // A path with no pending commit: the action runs at once.
            bool ranAtOnce = false;
            ConcurrentCommits.AfterInPlace(Path.Combine(dir, "other"), () => ranAtOnce = true);
            Assert.IsTrue(ranAtOnce);
        });
        Assert.IsTrue(sawFile, "the action ran once the file was at its path");
        Assert.AreEqual("id\n", File.ReadAllText(sidecar));
    }
}
