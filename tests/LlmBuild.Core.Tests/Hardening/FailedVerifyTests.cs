using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Stages;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>
/// Issue 19, cause 11: a build whose verify fails leaves no complete-looking bin/*.bmodel: the model moves beside the
/// intermediates as &lt;name&gt;.unverified.bmodel, and the error says where.
/// </summary>
[TestClass]
public sealed class FailedVerifyTests
{
    [TestMethod]
    public void AFailedVerifyMovesTheModelOutOfBin()
    {
        var small = SmallBuiltModel.Get();
        string root = Path.Combine(Path.GetTempPath(), $"failed-verify-{Guid.NewGuid():N}");
        string bin = Path.Combine(root, "bin"), obj = Path.Combine(root, "obj", "Debug", "llm");
        Directory.CreateDirectory(bin);
        string bmodel = Path.Combine(bin, "small.bmodel");
        File.Copy(small.BModel, bmodel);
        string report = Path.Combine(obj, "verify.json"), quarantine = Path.Combine(obj, "small.unverified.bmodel");

        var impossible = new VerifyThresholds(1.1, 1.1, 1.1);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => VerifyStage.RunOrQuarantine(small.Model, bmodel, report, quarantine, thresholds: impossible));

        Assert.AreEqual(ErrorCodes.VerifyFailed, e.Code);
        Assert.IsFalse(File.Exists(bmodel), "no unverified model in bin/");
        Assert.AreEqual(0, Directory.GetFiles(bin, "*.bmodel").Length);
        Assert.IsTrue(File.Exists(quarantine));
        StringAssert.Contains(e.Message, quarantine);
        Assert.IsTrue(File.Exists(report), "the report says why");
    }

    [TestMethod]
    public void APassingVerifyLeavesTheModelInBin()
    {
        var small = SmallBuiltModel.Get();
        string root = Path.Combine(Path.GetTempPath(), $"passed-verify-{Guid.NewGuid():N}");
        string bmodel = Path.Combine(root, "bin", "small.bmodel");
        Directory.CreateDirectory(Path.GetDirectoryName(bmodel)!);
        File.Copy(small.BModel, bmodel);
        var lenient = new VerifyThresholds(-1, -1, 0);
        VerifyStage.RunOrQuarantine(small.Model, bmodel, Path.Combine(root, "verify.json"), Path.Combine(root, "small.unverified.bmodel"), thresholds: lenient);
        Assert.IsTrue(File.Exists(bmodel));
    }
}
