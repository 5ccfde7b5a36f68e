using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
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
        if (name is "SharePrompt" or "UseBlockWithKv") Assert.IsTrue(r.Pieces.Any(p => p.Piece == "block_kv_0"), "verify runs the block_kv nets too");
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
        var reused = new float[2 * vocab + 3];
        for (int step = 0; step < 4; step++)
        {
            // Every other step into one reused buffer (the serving loop's call): the same logits as a fresh array.
            float[] both;
            if (step % 2 == 0) both = two.DecodeBatch(next);
            else
            {
                two.DecodeBatch(next, [true, true], reused);
                both = reused.AsSpan(0, 2 * vocab).ToArray();
            }
            batchedSteps.Add(both);
            next = [LlmEmulator.ArgMax(both.AsSpan(0, vocab)), LlmEmulator.ArgMax(both.AsSpan(vocab, vocab))];
        }
        Assert.AreEqual(ErrorCodes.RuntimeBadInput,
            Assert.ThrowsExactly<LlmBuildException>(() => two.DecodeBatch(next, [true, true], new float[2 * vocab - 1])).Code, "a buffer too short is refused");
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

    /// <summary>A prompt prefilled in two parts (block_i, then block_kv_i over the cached first part) gives the one-part logits.</summary>
    [TestMethod]
    public void HistoryPrefillContinuesTheCache()
    {
        var built = ExampleBuild.Get("bf16", seqLength: 48, extra: [("UseBlockWithKv", "true"), ("MaxInputLength", "8"), ("MaxPrefillKvLength", "16")]);
        using var emu = LlmEmulator.Load(built.BModel);
        Assert.IsTrue(emu.HasHistoryPrefill);
        Assert.AreEqual(16, emu.HistoryLength);
        int[] ids = [9707, 11, 1879, 374, 264, 1273, 315, 279, 2041, 13, 576, 3974];
        float[] whole = emu.Prefill(ids.AsSpan(0, 8), allPositions: true);
        float[] rest = emu.PrefillWithHistory(ids.AsSpan(8), allPositions: true);
        float[] next = emu.Decode(5);
        emu.Reset();
        float[] part = emu.Prefill(ids.AsSpan(0, 5), allPositions: true);
        float[] tail = emu.PrefillWithHistory(ids.AsSpan(5, 3), allPositions: true);
        int vocab = emu.VocabSize;
        Assert.IsTrue(EmulatorGoldenTests.Cosine(whole.AsSpan(0, 5 * vocab), part) > 0.99999);
        Assert.IsTrue(EmulatorGoldenTests.Cosine(whole.AsSpan(5 * vocab), tail) > 0.9999, "block_kv over a 5-token history = block rows 5..7");
        Assert.AreEqual(8, emu.Position);
        float[] rest2 = emu.PrefillWithHistory(ids.AsSpan(8), allPositions: true);
        Assert.IsTrue(EmulatorGoldenTests.Cosine(rest, rest2) > 0.9999);
        Assert.IsTrue(EmulatorGoldenTests.Cosine(next, emu.Decode(5)) > 0.9999, "decode after a block_kv prefill");
        emu.Reset();
        Assert.AreEqual(ErrorCodes.RuntimeBadInput, Assert.ThrowsExactly<LlmBuildException>(() => emu.PrefillWithHistory([1, 2])).Code, "nothing to continue");
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
