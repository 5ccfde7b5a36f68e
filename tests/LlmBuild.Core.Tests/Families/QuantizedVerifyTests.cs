using LlmBuild.Core.Calibration;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Calibration;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// Verify splits a quantized build's distance from the f32 reference into the build's own error (against the f32 model on
/// its quantized-and-dequantized weights, held to the 16-bit thresholds) and the quantization's. A genuine w4bf16 build
/// of each family fixture passes the first part (FamilyGoldenTests.QuantizedBuildsVerify); a build that computes other
/// weights — here the adjacent input columns of linears swapped, what a wrong nibble order in the packed weights does —
/// fails it, and verify names the build as the cause.
/// </summary>
[TestClass]
public sealed class QuantizedVerifyTests
{
    /// <summary>A copy of <paramref name="dir"/> whose selected 2-D weights have columns 2i and 2i+1 swapped (written as f32).</summary>
    private static string SwapColumns(string dir, Func<string, bool> select)
    {
        string copy = TestFiles.TempDir();
        foreach (string f in Directory.GetFiles(dir).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        using ICheckpoint source = CheckpointLoader.Open(dir);
        var tensors = new List<TestFiles.Tensor>();
        int swapped = 0;
        foreach (string name in source.TensorNames)
        {
            TensorInfo info = source.GetInfo(name);
            var values = new float[info.ElementCount];
            source.ReadFloat32(name, values);
            if (info.Shape.Length == 2 && select(name))
            {
                for (int i = 0; i + 1 < values.Length; i += 2) (values[i], values[i + 1]) = (values[i + 1], values[i]);
                swapped++;
            }
            tensors.Add(new TestFiles.Tensor(name, "F32", info.Shape.ToArray(), TestFiles.Bytes(values)));
        }
        Assert.IsTrue(swapped > 0, "nothing was corrupted");
        TestFiles.WriteSafetensors(Path.Combine(copy, "model.safetensors"), tensors);
        return copy;
    }

    private static bool IsBlockLinear(string name) => name.Contains(".layers.", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal)
        && !name.Contains("norm", StringComparison.Ordinal);

    [TestMethod]
    [DataRow("llama", "every block linear")]
    [DataRow("phi3", "every block linear")]
    [DataRow("llama", "model.layers.1.mlp.down_proj.weight")]
    public void AW4BuildOfOtherWeightsFailsVerifyAsTheBuilds(string family, string corrupted)
    {
        var golden = FamilyGoldenTests.FamilyGolden.Load(family);
        string dir = SwapColumns(golden.Dir, corrupted == "every block linear" ? IsBlockLinear : name => name == corrupted);
        var good = ExampleBuild.Get("w4bf16", groupSize: 32, extra: [("ModelPath", golden.Dir), ("LlmModelName", family)]);
        var broken = ExampleBuild.Get("w4bf16", groupSize: 32, extra: [("ModelPath", dir), ("LlmModelName", family)]);

        VerifyReport r = VerifyStage.Measure(good.Model, broken.BModel, VerifyStage.FixedPrompt(good.Model), VerifyStage.DefaultDecodeSteps,
            VerifyThresholds.For(good.Model.Weights));
        foreach (string line in r.Table()) Console.WriteLine(line);

        Assert.IsFalse(r.Passed);
        Assert.IsNotNull(r.Quantization);
        Assert.IsFalse(r.Quantization.BuildPasses(VerifyThresholds.OfTheBuildItself), $"{family}: {corrupted} swapped, yet the build part passes");
        Assert.IsTrue(r.Failures.Any(f => f.Contains("the build, not the quantization, is off", StringComparison.Ordinal)), string.Join("; ", r.Failures));
    }

    /// <summary>
    /// GPTQ/AWQ instead of round-to-nearest on two fixtures without fused tensors (calibrated on text the model generates
    /// from single-token starts: the fixtures have no tokenizer, which the build's own calibration needs): the quantized
    /// model against the unquantized one over the fixture's 12 prompt + 16 greedy tokens — what verify's verdict measures,
    /// the build itself being faithful to its weights. Measured (llama: rtn 0.74 / gptq 0.68 / awq 0.36 in cosine; gemma3_text
    /// 0.94 / 0.93 / 0.90): the random networks stay below verify's 0.95 whichever way their weights are rounded.
    /// </summary>
    [TestMethod]
    [DataRow("llama")]
    [DataRow("gemma3_text")]
    public void CalibratedW4WeightsOfTheFixtures(string family)
    {
        var golden = FamilyGoldenTests.FamilyGolden.Load(family);
        int[] tokens = [.. golden.Prompt, .. golden.Generated[..^1]];
        using ICheckpoint source = CheckpointLoader.Open(golden.Dir);
        var config = ModelConfig.Load(golden.Dir);
        float[] exact = new ReferenceModel(source, config).Forward(tokens);
        var rows = new List<string>();
        foreach (string method in new[] { "rtn", "gptq", "awq" })
        {
            ResolvedModel model = ExampleBuild.Resolve(new Dictionary<string, string?> { ["ModelPath"] = golden.Dir, ["SeqLength"] = "64", ["Quantize"] = "w4bf16", ["QGroupSize"] = "32" });
            string dir = TestFiles.TempDir(), stats = Path.Combine(dir, "stats");
            Directory.CreateDirectory(stats);
            if (method != "rtn")
            {
                model = model with { Calibration = new CalibrationSettings(method, 8, 32, 0, false, []) };
                var generator = new ReferenceModel(source, config);
                int[][] sequences = CalibrationText.SelfGenerated(model.Calibration, generator,
                    Enumerable.Range(0, 8).Select(i => new[] { (i * 97 + 5) % config.VocabSize }).ToArray());
                CalibrationRun.Collect(generator, sequences, l => l.Write(Path.Combine(stats, LayerStatistics.FileName(l.Layer))));
            }
            var quantized = new ReferenceModel(source, config);
            using ICheckpoint build = QuantizeStage.OpenSource(model);
            foreach (var owner in model.Owners.Where(o => o.Name.StartsWith("block_", StringComparison.Ordinal)))
            {
                string npz = Path.Combine(dir, owner.FileName);
                QuantizeStage.Run(build, model, owner.Name, npz, statsDir: method == "rtn" ? null : stats, calibrationDir: method == "rtn" ? null : dir);
                using var reader = new NpzReader(npz);
                foreach (var e in owner.Entries.Where(e => e.Storage == WeightStorage.Quantized))
                    quantized.ReplaceWeight(e.SourceTensor, CalibrationFidelityTests.Dequantize(reader, e, model.SchemeOf(e).Bits));
            }
            float[] logits = quantized.Forward(tokens);
            int vocab = golden.Vocab, agree = 0;
            double worst = 1;
            for (int t = 0; t < tokens.Length; t++)
            {
                var a = logits.AsSpan(t * vocab, vocab);
                var b = exact.AsSpan(t * vocab, vocab);
                worst = Math.Min(worst, VerifyStage.Cosine(a, b));
                if (LlmEmulator.ArgMax(a) == LlmEmulator.ArgMax(b)) agree++;
            }
            rows.Add($"{method} cosine {worst:F4}, top-1 {(double)agree / tokens.Length:P1}");
            Assert.IsTrue(worst < 0.95, $"{family} {method}: 4-bit weights no longer move this fixture's logits past verify's 0.95 ({worst}); revisit the README's account");
        }
        Console.WriteLine($"{family} w4 g32 block weights vs the unquantized model over {tokens.Length} positions: {string.Join("; ", rows)}");
    }
}
