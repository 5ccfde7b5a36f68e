using LlmBuild.Core.BModel;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Runtime;

[TestClass]
public sealed class LlmEmulatorTests
{
    /// <summary>With MaxInputLength below the sequence, teacher forcing crosses from prefill into decode; every position still matches.</summary>
    [TestMethod]
    public void TeacherForcingAcrossPrefillAndDecodeMatchesTheReference()
    {
        var built = ExampleBuild.Get("bf16", seqLength: 32, extra: ("MaxInputLength", "8"));
        int[] ids = Enumerable.Range(0, 20).Select(i => 100 + 37 * i).ToArray();
        using var emu = LlmEmulator.Load(built.BModel);
        Assert.AreEqual(8, emu.PrefillLength);
        Assert.AreEqual(32, emu.SeqLength);
        float[] actual = emu.TeacherForced(ids, allPositions: true);
        using ICheckpoint checkpoint = CheckpointLoader.Open(built.Model.Options.ModelPath);
        float[] expected = new ReferenceModel(checkpoint, built.Model.Config).Forward(ids);
        int vocab = emu.VocabSize;
        for (int p = 0; p < ids.Length; p++)
        {
            double cos = EmulatorGoldenTests.Cosine(actual.AsSpan(p * vocab, vocab), expected.AsSpan(p * vocab, vocab));
            Assert.IsTrue(cos > 0.999, $"position {p}: cosine {cos}");
        }
        float[] last = emu.TeacherForced(ids, allPositions: false);
        CollectionAssert.AreEqual(actual.AsSpan((ids.Length - 1) * vocab, vocab).ToArray(), last);
    }

    [TestMethod]
    public void BadRequestsAreCodedErrors()
    {
        var built = ExampleBuild.Get("bf16");
        using var emu = LlmEmulator.Load(built.BModel);
        Assert.AreEqual(ErrorCodes.BadTokenIds, Assert.ThrowsExactly<LlmBuildException>(() => emu.Prefill([1, 999999])).Code);
        Assert.AreEqual(ErrorCodes.RuntimeBadInput, Assert.ThrowsExactly<LlmBuildException>(() => emu.Prefill(new int[emu.PrefillLength + 1])).Code);
        Assert.AreEqual(ErrorCodes.RuntimeBadInput, Assert.ThrowsExactly<LlmBuildException>(() => emu.Runtime.Net("block_99")).Code);
        // A bmodel for real silicon (the same file with the vendor chip name) is refused, not run.
        using (var c = BModelReader.Read(built.PieceBModels["lm_head"]))
        {
            var blob = new BModelBlobBuilder();
            var silicon = BModelBinaries.Map(c.Model, (_, b) => blob.Add(c.GetMemory(b))) with { Chip = "BM1684X" };
            string path = Path.Combine(built.Dir, "silicon.bmodel");
            BModelWriter.WriteFile(path, silicon, blob);
            var e = Assert.ThrowsExactly<LlmBuildException>(() => EmulatorRuntime.Load(path));
            Assert.AreEqual(ErrorCodes.NotEmulatorModel, e.Code);
            StringAssert.Contains(e.Message, "BM1684X");
        }
    }
}
