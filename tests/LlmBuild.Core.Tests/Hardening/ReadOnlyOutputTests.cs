using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Tests;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>Issue 19, cause 7: an output folder that cannot be written is LLMB0901 naming the path, never a raw IOException.</summary>
[TestClass]
public sealed class ReadOnlyOutputTests
{
    [TestMethod]
    public void CombineIntoAReadOnlyBinIsACodedErrorNamingThePath()
    {
        var built = ExampleBuild.Get("bf16", seqLength: 16);
        string bin = Path.Combine(Path.GetTempPath(), $"ro-bin-{Guid.NewGuid():N}");
        using (new ReadOnlyFolder(bin))
        {
            string config = Path.Combine(bin, "config");
            var pieces = built.Model.Pieces.Select(p => built.PieceBModels[p.Name]).ToArray();
            var e = Assert.ThrowsExactly<LlmBuildException>(() => CombineStage.Run(built.Model, pieces,
                [Path.Combine(ExampleBuild.ModelDir, "config.json")], Path.Combine(bin, "m.bmodel"), config));
            Assert.AreEqual(ErrorCodes.WriteFailed, e.Code);
            StringAssert.Contains(e.Message, bin);
        }
    }

    [TestMethod]
    public void WritingIntoAReadOnlyFolderIsACodedErrorAndLeavesNoTemporary()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"ro-{Guid.NewGuid():N}");
        using (new ReadOnlyFolder(dir))
        {
            string file = Path.Combine(dir, "options.stamp");
            var e = Assert.ThrowsExactly<LlmBuildException>(() => AtomicFile.WriteAllTextIfChanged(file, "x=1\n"));
            Assert.AreEqual(ErrorCodes.WriteFailed, e.Code);
            Assert.AreEqual(file, e.File);
            var nested = Assert.ThrowsExactly<LlmBuildException>(() => AtomicFile.WriteAllText(Path.Combine(dir, "sub", "resolved.json"), "{}"));
            Assert.AreEqual(ErrorCodes.WriteFailed, nested.Code);
            StringAssert.Contains(nested.Message, Path.Combine(dir, "sub"));
        }
        Assert.AreEqual(0, Directory.GetFiles(dir).Length);
    }
}
