using System.Text.Json.Nodes;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// Each family against Hugging Face's own float32 logits (tests/fixtures/families/&lt;model_type&gt;: tiny checkpoints
/// saved by the family's modeling code; golden-open.* = prefill logits at every prompt position and the logits of 16
/// greedy steps). The f32 reference forward must reproduce them (cosine ≥ 0.99999, same argmax), the bf16 build run
/// by the emulator too (cosine ≥ 0.9999, same greedy ids except a declared near-tie), and the w8bf16 build must pass verify.
/// </summary>
[TestClass]
public sealed class FamilyGoldenTests
{
    /// <summary>One family fixture: its checkpoint folder and Hugging Face's goldens.</summary>
    internal sealed record FamilyGolden(string Dir, int[] Prompt, int[] Generated, float[] PromptLogits, float[] GeneratedLogits, int Vocab)
    {
        public static FamilyGolden Load(string family)
        {
            string dir = Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures", "families", family);
            var json = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "golden-open.json")))!;
            int[] prompt = ((JsonArray)json["prompt_ids"]!).Select(n => (int)n!).ToArray();
            int[] generated = ((JsonArray)json["generated_ids"]!).Select(n => (int)n!).ToArray();
            float[] logits = Goldens.ReadNpyF32(Path.Combine(dir, "golden-open.logits.npy"));
            float[] gen = Goldens.ReadNpyF32(Path.Combine(dir, "golden-open.gen_logits.npy"));
            return new FamilyGolden(dir, prompt, generated, logits, gen, logits.Length / prompt.Length);
        }

        public ReadOnlySpan<float> PromptRow(int t) => PromptLogits.AsSpan(t * Vocab, Vocab);
        /// <summary>The logits that chose generated token <paramref name="step"/> (row 0 = the last prompt position's).</summary>
        public ReadOnlySpan<float> StepRow(int step) => GeneratedLogits.AsSpan(step * Vocab, Vocab);
    }

    private static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b) => VerifyStage.Cosine(a, b);

    /// <summary>
    /// Greedy steps where Hugging Face's own logits of its token and of the build's token are closer than this may differ
    /// (the step is then reported and the decode continues with Hugging Face's token). qwen2_moe's fixture has such a
    /// near-tie at step 1 (logits 7.2843 vs 7.2396): rounding the KV cache to bf16 (the net contract) flips it, and
    /// nothing else does — the exported graphs interpreted in f32 reproduce all 16 ids (MoeFamilyTests).
    /// </summary>
    internal static readonly Dictionary<string, double> NearTieLogitGaps = new(StringComparer.Ordinal) { ["qwen2_moe"] = 0.05 };

    /// <summary>
    /// Fixtures whose bf16 build stays below the 0.9999 when decoded token by token: the graphs are exact and the
    /// whole loss is the net contract's bf16 KV cache (TPU-MLIR compiles every block with --quant_input/--quant_output, so
    /// the chip stores and reads back bf16 keys and values too; the emulator rounds nothing else). With an f32 cache the same
    /// graphs reach 0.999932 (phi3) and 0.999987 (chatglm), and the built model prefilling the whole sequence at once
    /// 0.999932 / 0.999987 (<see cref="Bf16DivergenceTests"/>). phi3's keys cost most: its attention scores are 2.3× as
    /// spread as llama's fixture (std median 3.8 vs 1.6, max |score| 18), so a relative rounding of k moves them further;
    /// chatglm's values cost most (values alone 0.99985), by a mechanism not isolated.
    /// </summary>
    internal static readonly Dictionary<string, double> Bf16Floors = new(StringComparer.Ordinal) { ["phi3"] = 0.9998, ["chatglm"] = 0.9996 };

    /// <summary>Runs prompt then greedy decode with <paramref name="prefill"/>/<paramref name="decode"/>; returns the worst cosine.</summary>
    internal static double Compare(FamilyGolden golden, Func<int[], float[]> prefill, Func<int, float[]> decode, string what, double nearTieGap = 0)
    {
        float[] logits = prefill(golden.Prompt);
        int vocab = golden.Vocab;
        double worst = 1;
        for (int t = 0; t < golden.Prompt.Length; t++)
        {
            var row = logits.AsSpan(t * vocab, vocab);
            worst = Math.Min(worst, Cosine(row, golden.PromptRow(t)));
            Assert.AreEqual(LlmEmulator.ArgMax(golden.PromptRow(t)), LlmEmulator.ArgMax(row), $"{what}: argmax at prompt position {t}");
        }
        float[] last = logits.AsSpan((golden.Prompt.Length - 1) * vocab, vocab).ToArray();
        for (int step = 0; step < golden.Generated.Length; step++)
        {
            worst = Math.Min(worst, Cosine(last, golden.StepRow(step)));
            int token = LlmEmulator.ArgMax(last);
            var hf = golden.StepRow(step);
            if (token != golden.Generated[step] && Math.Abs(hf[golden.Generated[step]] - hf[token]) < nearTieGap)
            {
                Console.WriteLine($"{what}: greedy step {step} picks {token} (Hugging Face: {golden.Generated[step]}); Hugging Face's logits of the two " +
                    $"differ by {Math.Abs(hf[golden.Generated[step]] - hf[token]):F4} < {nearTieGap}: a near-tie, decoding on with Hugging Face's token");
                token = golden.Generated[step];
            }
            Assert.AreEqual(golden.Generated[step], token, $"{what}: greedy step {step}");
            last = decode(token);
        }
        return worst;
    }

    public static IEnumerable<object[]> Fixtures => new[] { "llama", "mistral", "qwen3", "phi3", "minicpm", "chatglm", "gemma3_text", "gemma2", "qwen2_moe" }.Select(f => new object[] { f });

    [TestMethod]
    [DynamicData(nameof(Fixtures))]
    public void ReferenceForwardReproducesHuggingFace(string family)
    {
        var golden = FamilyGolden.Load(family);
        using ICheckpoint checkpoint = CheckpointLoader.Open(golden.Dir);
        var reference = new ReferenceModel(checkpoint, ModelConfig.Load(golden.Dir));
        double worst = Compare(golden, ids => reference.Forward(ids), id => reference.Forward([id]), $"{family} reference");
        Console.WriteLine($"{family}: reference forward worst cosine vs Hugging Face {worst:F7}");
        Assert.IsTrue(worst >= 0.99999, $"{family}: worst cosine {worst}");
    }

    [TestMethod]
    [DynamicData(nameof(Fixtures))]
    public void Bf16BuildReproducesHuggingFace(string family)
    {
        var golden = FamilyGolden.Load(family);
        var built = ExampleBuild.Get("bf16", extra: [("ModelPath", golden.Dir), ("LlmModelName", family)]);
        using var emu = LlmEmulator.Load(built.BModel);
        double worst = Compare(golden, ids => emu.Prefill(ids, allPositions: true), id => emu.Decode(id), $"{family} bf16 build",
            NearTieLogitGaps.GetValueOrDefault(family));
        Console.WriteLine($"{family}: bf16 build worst cosine vs Hugging Face {worst:F7}");
        double threshold = Bf16Floors.GetValueOrDefault(family, 0.9999);
        Assert.IsTrue(worst >= threshold, $"{family}: worst cosine {worst}");
    }

    [TestMethod]
    [DynamicData(nameof(Fixtures))]
    public void QuantizedBuildsVerify(string family)
    {
        var golden = FamilyGolden.Load(family);
        AssertW8Bf16Verifies(golden.Dir, family);

        var w4 = ExampleBuild.Get("w4bf16", groupSize: 32, extra: [("ModelPath", golden.Dir), ("LlmModelName", family)]);
        VerifyReport r4 = VerifyStage.Measure(w4.Model, w4.BModel, VerifyStage.FixedPrompt(w4.Model), 24, VerifyThresholds.For(w4.Model.Weights));
        Console.WriteLine($"{family} w4bf16 g32: worst piece cosine {r4.Pieces.Min(p => p.Cosine):F4}, final logits cosine {r4.Logits.MinCosine:F4}, top-1 {r4.Logits.Top1Agreement:P1}");
        foreach (string line in r4.Table()) Console.WriteLine(line);
        // Verify's verdict on these random fixtures is the quantization's (QuantizedVerifyTests): the build itself must compute its quantized model.
        Assert.IsNotNull(r4.Quantization);
        Assert.IsTrue(r4.Quantization.BuildPasses(VerifyThresholds.OfTheBuildItself), $"{family}: the w4bf16 build does not compute its quantized model");
        Assert.IsFalse(r4.Failures.Any(f => f.Contains("the build, not the quantization", StringComparison.Ordinal)));
    }

    /// <summary>Builds <paramref name="dir"/> at w8bf16 (group 32) and asserts that verify passes, printing its table.</summary>
    internal static void AssertW8Bf16Verifies(string dir, string name)
    {
        var w8 = ExampleBuild.Get("w8bf16", groupSize: 32, extra: [("ModelPath", dir), ("LlmModelName", name)]);
        var lines = new List<string>();
        VerifyReport report = VerifyStage.Run(w8.Model, w8.BModel, Path.Combine(w8.Dir, "verify.json"), lines.Add);
        foreach (string l in lines) Console.WriteLine(l);
        Assert.IsTrue(report.Passed, $"{name}: w8bf16 verify failed");
    }
}
