using LlmBuild.Core.BModel;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Reference;
using LlmBuild.Core.Tests.Runtime;

namespace LlmBuild.Core.Tests.Flags;

/// <summary>-q f32: float32 weights, activations, KV cache and net I/O through the whole pipeline.</summary>
[TestClass]
public sealed class Float32BuildTests
{
    [TestMethod]
    public void F32BuildReproducesHuggingFaceGoldensClosely()
    {
        var built = ExampleBuild.Get("f32");
        Assert.AreEqual("f32", built.Model.ActivationDtype);
        Assert.IsFalse(built.Model.Weights.IsQuantized);
        using var emu = LlmEmulator.Load(built.BModel);
        Assert.AreEqual(BModelDataType.Float32, emu.ActivationType, "hidden states and KV in f32");
        int vocab = emu.VocabSize;
        int[] prompt = Goldens.PromptIds;
        float[] logits = emu.Prefill(prompt, allPositions: true);
        double worst = 1;
        for (int t = 0; t < prompt.Length; t++)
            worst = Math.Min(worst, EmulatorGoldenTests.Cosine(logits.AsSpan(t * vocab, vocab), Goldens.PromptLogits.AsSpan(t * vocab, vocab)));
        float[] last = logits.AsSpan((prompt.Length - 1) * vocab, vocab).ToArray();
        for (int step = 0; step < Goldens.GeneratedIds.Length; step++)
        {
            worst = Math.Min(worst, EmulatorGoldenTests.Cosine(last, Goldens.GeneratedLogits.AsSpan(step * vocab, vocab)));
            int token = LlmEmulator.ArgMax(last);
            Assert.AreEqual(Goldens.GeneratedIds[step], token, $"greedy step {step}");
            last = emu.Decode(token);
        }
        Console.WriteLine($"f32 build, worst cosine vs Hugging Face: {worst:F7}");
        // The bf16 build reaches 0.99998 or so; f32 has no rounding between nets, so it must be far closer.
        Assert.IsTrue(worst >= 0.999999, $"worst cosine {worst}");
    }

    [TestMethod]
    public void F32BuildPassesVerifyWithEveryVariantNet()
    {
        var built = ExampleBuild.Get("f32", seqLength: 48, extra: [("UseHistoryKv", "true"), ("ChunkLength", "8"), ("EmbeddingDisk", "true")]);
        var lines = new List<string>();
        VerifyReport r = VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, "verify-f32.json"), lines.Add);
        foreach (string l in lines) Console.WriteLine(l);
        Assert.IsTrue(r.Passed, string.Join("; ", r.Failures));
        Assert.IsTrue(r.Logits.MinCosine > 0.999999, $"final-logit cosine {r.Logits.MinCosine}");
        Assert.AreEqual((long)built.Model.Config.VocabSize * built.Model.Config.HiddenSize * 4, new FileInfo(Path.Combine(built.ConfigDir, "embedding.bin")).Length);
    }
}
