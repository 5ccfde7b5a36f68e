using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Runtime;

/// <summary>
/// GGUF files and the FP8 checkpoint built through every stage and run in the emulator: a bf16 build reproduces
/// Hugging Face's logits on the exactly dequantized weights, and Quantize=auto keeps Q8_0/Q4_0 blocks unchanged (w8/w4,
/// symmetric groups of 32) or, for FP8, quantizes to w8bf16 — and passes verify.
/// </summary>
[TestClass]
public sealed class GgufBuildTests
{
    private static ExampleBuild.Built Build(string fixture, string quantize) =>
        ExampleBuild.Get(quantize, seqLength: 48, extra: [("ModelPath", GgufReferenceTests.Fixture(fixture).ModelPath), ("LlmModelName", fixture)]);

    private static (double Worst, int[] Greedy) CompareWithGoldens(string fixture, ExampleBuild.Built built)
    {
        var golden = GgufReferenceTests.Fixture(fixture);
        using var emu = LlmEmulator.Load(built.BModel, built.ConfigDir);
        return golden.Compare(emu.VocabSize, ids => emu.Prefill(ids, allPositions: true), id => emu.Decode(id));
    }

    /// <summary>
    /// The trained fortunes model meets 0.9999 in bf16. The random-weight llama and FP8 fixtures (weights of std 0.1, so
    /// activations grow layer by layer) lose a little more to bf16's 8-bit mantissa — 0.9996–0.9998, every greedy id
    /// still Hugging Face's — and meet 0.9999 in f16, which shows the gap is the activation dtype, not the weights.
    /// </summary>
    [TestMethod]
    [DataRow("tiny-qwen2-fortunes-q8_0", "bf16", 0.9999)]
    [DataRow("tiny-qwen2-fortunes-q4_0", "bf16", 0.9999)]
    [DataRow("tiny-llama-q4_k_m", "bf16", 0.9995)]
    [DataRow("tiny-llama-q8_0", "bf16", 0.9995)]
    [DataRow("fp8", "bf16", 0.9995)]
    [DataRow("tiny-llama-q4_k_m", "f16", 0.9999)]
    [DataRow("tiny-llama-q8_0", "f16", 0.9999)]
    [DataRow("fp8", "f16", 0.9999)]
    public void FloatBuildReproducesHuggingFaceGoldens(string fixture, string quantize, double threshold)
    {
        var (worst, greedy) = CompareWithGoldens(fixture, Build(fixture, quantize));
        Console.WriteLine($"{fixture} {quantize} build: worst cosine vs Hugging Face {worst:F6}, greedy {string.Join(",", greedy)}");
        CollectionAssert.AreEqual(GgufReferenceTests.Fixture(fixture).GeneratedIds, greedy, "greedy ids");
        Assert.IsTrue(worst >= threshold, $"worst cosine {worst}");
    }

    [TestMethod]
    [DataRow("tiny-qwen2-fortunes-q8_0", "w8bf16")]
    [DataRow("tiny-qwen2-fortunes-q4_0", "w4bf16")]
    [DataRow("tiny-llama-q8_0", "w8bf16")]
    [DataRow("fp8", "w8bf16")]
    public void AutoBuildKeepsTheSourceQuantizationAndPassesVerify(string fixture, string expected)
    {
        // FP8 weights are quantized again (QGroupSize and Symmetric apply). This random fixture's near-tied logits
        // (top-1/top-2 gap down to 0.005) need symmetric groups of 32 for verify's 90 % top-1; the default g64
        // asymmetric build reaches logit cosine 0.9993 but 81 % top-1.
        var built = fixture == "fp8"
            ? ExampleBuild.Get("auto", seqLength: 48, groupSize: 32, extra: [("ModelPath", GgufReferenceTests.Fixture(fixture).ModelPath), ("LlmModelName", fixture), ("Symmetric", "true")])
            : Build(fixture, "auto");
        Assert.AreEqual(expected, built.Model.Quantize);
        if (fixture != "fp8") Assert.AreEqual(new QuantScheme(expected[1] - '0', 32, true), built.Model.Weights);
        var lines = new List<string>();
        VerifyReport report = VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, "verify.json"), lines.Add);
        foreach (string l in lines) Console.WriteLine(l);
        Assert.IsTrue(report.Passed, string.Join("\n", report.Failures));
        var (worst, greedy) = CompareWithGoldens(fixture, built);
        int same = greedy.Zip(GgufReferenceTests.Fixture(fixture).GeneratedIds).Count(p => p.First == p.Second);
        Console.WriteLine($"{fixture} auto ({built.Model.Quantize}) build: worst cosine vs Hugging Face {worst:F6}, greedy {same}/{greedy.Length} as Hugging Face");
        // Kept blocks hold the exact weights: only bf16 activations separate the build from Hugging Face's f32 forward.
        if (fixture != "fp8") Assert.IsTrue(worst >= 0.999, $"worst cosine {worst}");
    }

    [TestMethod]
    [DataRow("tiny-qwen2-fortunes-q8_0")]
    [DataRow("tiny-qwen2-fortunes-q4_0")]
    [DataRow("tiny-llama-q8_0")]
    public void KeptBlocksDequantizeToExactlyTheGgufValues(string fixture)
    {
        using var checkpoint = (GgufCheckpoint)CheckpointLoader.Open(GgufReferenceTests.Fixture(fixture).ModelPath);
        var scheme = new QuantScheme(checkpoint.StoredType("model.layers.0.self_attn.q_proj.weight") == GgmlType.Q8_0 ? 8 : 4, 32, true);
        foreach (string name in new[] { "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight", "model.layers.1.mlp.down_proj.weight" })
        {
            Assert.IsTrue(GgufBlockUnpacker.KeepsExactly(checkpoint, name, scheme.Bits, scheme.GroupSize, scheme.Symmetric), name);
            float[] expected = new float[checkpoint.GetInfo(name).ElementCount];
            checkpoint.ReadFloat32(name, 0, expected);
            float[] actual = LinearQuantizer.DequantizeInSourceOrder(GgufBlockUnpacker.Unpack(checkpoint, name));
            CollectionAssert.AreEqual(expected, actual, name);
        }
    }

    [TestMethod]
    public void KQuantsAreDequantizedAndTheBuildLogSaysSo()
    {
        var warnings = new List<LlmBuildWarning>();
        var props = new Dictionary<string, string?>
        {
            ["ModelPath"] = GgufReferenceTests.Fixture("tiny-llama-q4_k_m").ModelPath, ["SeqLength"] = "48", ["Quantize"] = "w4bf16",
            ["QGroupSize"] = "64", ["Chip"] = "bm1684x", ["LlmModelName"] = "k",
        };
        ResolvedModel model = ResolveStage.Resolve(props, warnings);
        Assert.AreEqual(new QuantScheme(4, 64, false), model.Weights);
        var note = warnings.Single(w => w.Code == ErrorCodes.GgufRequantized);
        StringAssert.Contains(note.Message, "Q4_K, Q6_K");
        StringAssert.Contains(note.Message, "w4bf16");
        // With auto, a file that is not all Q8_0 or all Q4_0 builds from its exact dequantization in the activation dtype.
        Assert.AreEqual("bf16", ResolveStage.Resolve(new Dictionary<string, string?>(props) { ["Quantize"] = "auto" }, warnings).Quantize);
    }
}
