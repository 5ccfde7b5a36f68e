using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Pipeline;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Runtime;

/// <summary>Every build option that changes the nets still gives a model the emulator runs and the verify stage passes.</summary>
[TestClass]
public sealed class EmulatorOptionTests
{
    [TestMethod]
    [DataRow("EmbeddingDisk", "true", "", "")]
    [DataRow("SharePrompt", "true", "MaxPrefillKvLength", "16")]
    [DataRow("UseBlockWithKv", "true", "", "")]
    [DataRow("Batch", "2", "", "")]
    [DataRow("Dynamic", "true", "", "")]
    [DataRow("DoSample", "true", "", "")]
    [DataRow("LoraMaxRank", "4", "", "")]
    public void OptionBuildPassesVerify(string name, string value, string name2, string value2)
    {
        var extra = new List<(string, string)> { (name, value) };
        if (name2.Length > 0) extra.Add((name2, value2));
        var built = ExampleBuild.Get("bf16", seqLength: 48, extra: extra.ToArray());
        var lines = new List<string>();
        VerifyReport r = VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, "verify.json"), lines.Add);
        foreach (string l in lines) Console.WriteLine(l);
        Assert.IsTrue(r.Passed, string.Join("; ", r.Failures));
        Assert.IsTrue(r.Logits.Top1Agreement >= 0.95, $"top-1 {r.Logits.Top1Agreement}");
        if (name == "EmbeddingDisk") Assert.AreEqual("embedding.bin", r.Pieces[0].Piece);
        if (name == "SharePrompt") Assert.IsTrue(r.Pieces.Any(p => p.Piece == "block_prompt_0"));
    }

    /// <summary>Two sequences decoded in one batch give each the logits it gets alone.</summary>
    [TestMethod]
    public void BatchDecodeMatchesSingleSequences()
    {
        var single = ExampleBuild.Get("bf16", seqLength: 48);
        var batched = ExampleBuild.Get("bf16", seqLength: 48, extra: ("Batch", "2"));
        int[] a = [9707, 11, 1879, 374], b = [785, 3974, 13876, 38835, 35308, 34208];
        using var one = LlmEmulator.Load(single.BModel);
        using var two = LlmEmulator.Load(batched.BModel);
        Assert.AreEqual(2, two.Batch);
        int vocab = one.VocabSize;

        float[] la = two.Prefill(a, slot: 0), lb = two.Prefill(b, slot: 1);
        int[] next = [LlmEmulator.ArgMax(la), LlmEmulator.ArgMax(lb)];
        var batchedSteps = new List<float[]>();
        for (int step = 0; step < 4; step++)
        {
            float[] both = two.DecodeBatch(next);
            batchedSteps.Add(both);
            next = [LlmEmulator.ArgMax(both.AsSpan(0, vocab)), LlmEmulator.ArgMax(both.AsSpan(vocab, vocab))];
        }
        Assert.AreEqual(a.Length + 4, two.PositionOf(0));
        Assert.AreEqual(b.Length + 4, two.PositionOf(1));

        for (int s = 0; s < 2; s++)
        {
            int[] prompt = s == 0 ? a : b;
            float[] logits = one.Prefill(prompt);
            Assert.IsTrue(EmulatorGoldenTests.Cosine(logits, s == 0 ? la : lb) > 0.99999, $"slot {s} prefill");
            for (int step = 0; step < 4; step++)
            {
                logits = one.Decode(LlmEmulator.ArgMax(logits));
                double cos = EmulatorGoldenTests.Cosine(logits, batchedSteps[step].AsSpan(s * vocab, vocab));
                Assert.IsTrue(cos > 0.99999, $"slot {s} step {step}: cosine {cos}");
            }
        }
        Assert.AreEqual(ErrorCodes.RuntimeBadInput, Assert.ThrowsExactly<LlmBuildException>(() => two.Prefill(a, slot: 2)).Code);
        Assert.AreEqual(ErrorCodes.RuntimeBadInput, Assert.ThrowsExactly<LlmBuildException>(() => two.DecodeBatch([1])).Code);
    }

    [TestMethod]
    public void EmbeddingDiskWithoutEmbeddingBinIsACodedError()
    {
        var built = ExampleBuild.Get("bf16", seqLength: 48, extra: ("EmbeddingDisk", "true"));
        string empty = Path.Combine(built.Dir, "no-config");
        Directory.CreateDirectory(empty);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => LlmEmulator.Load(built.BModel, empty));
        Assert.AreEqual(ErrorCodes.RuntimeBadInput, e.Code);
        StringAssert.Contains(e.Message, "embedding.bin");
    }
}
