using LlmBuild.Core.Calibration;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Calibration;

/// <summary>
/// Mixed precision under QuantizeBudget on the example model: the width choice (deterministic, every block linear listed,
/// within the budget), its fidelity against the float model on held-out sequences (beats plain w4 RTN on top-1 and
/// logits cosine), a mixed bmodel through export, codegen and the emulator (verify at the w4 thresholds), the device-memory
/// count, QuantizeLmHead=w8, and the coded errors of bad budgets.
/// </summary>
[TestClass]
public sealed class MixedPrecisionTests
{
    /// <summary>The example's block linears: 4 layers × (q, k, v, o, gate, up, down).</summary>
    private const int BlockLinears = 4 * 7;

    private static Dictionary<string, string?> Props(params (string Name, string Value)[] extra)
    {
        var props = new Dictionary<string, string?>
        {
            ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = "64", ["Quantize"] = "w4bf16", ["QGroupSize"] = "64",
            ["CalibrationSamples"] = "4", ["CalibrationSeqLength"] = "32",
        };
        foreach (var (n, v) in extra) props[n] = v;
        return props;
    }

    [TestMethod]
    public void AMixedBuildBetweenW4AndW8BeatsRoundToNearest()
    {
        var rows = new List<string>();
        foreach (int groupSize in new[] { 64, 32 })
        {
            // Halfway between every block linear at w4 and every one at w8 (scales and zero points included):
            // 6.625 bpw at g64, 7.25 bpw at g32.
            double overhead = 40.0 / groupSize;
            var budget = new WeightBudget(6 + overhead, WeightBudget.Bpw);
            PrecisionChoice? choice = null;
            var rtn = CalibrationFidelityTests.Measure("rtn", groupSize);
            var mixed = CalibrationFidelityTests.Measure("rtn", groupSize, budget: budget, chosen: c => choice = c);
            var mixedGptq = CalibrationFidelityTests.Measure("gptq", groupSize, budget: budget);
            // For scale: every block linear at w8 (the budget's top).
            var allEight = CalibrationFidelityTests.Measure("rtn", groupSize, budget: new WeightBudget(8 + overhead, WeightBudget.Bpw));
            string row = $"w4 g{groupSize}: rtn {rtn}, mixed {budget} (rtn) {mixed}, mixed {budget} (gptq) {mixedGptq}, all w8 {allEight}; " +
                $"{choice!.Linears.Count(l => l.Bits == 8)} of {choice.Linears.Count} linears at w8, {choice.BitsPerWeight} bpw";
            Console.WriteLine(row);
            rows.Add(row);
            Assert.IsTrue(mixed.Top1 > rtn.Top1 && mixed.Cosine > rtn.Cosine, "the mixed build beats RTN on top-1 and cosine: " + row);
            Assert.IsTrue(mixedGptq.Top1 > rtn.Top1 && mixedGptq.Cosine > rtn.Cosine, "mixed GPTQ beats RTN on top-1 and cosine: " + row);
        }
    }

    [TestMethod]
    public void TheChoiceIsDeterministicListsEveryLinearAndMeetsTheBudget()
    {
        var model = ExampleBuild.Resolve(Props(("QuantizeBudget", "6.0bpw")));
        string dir = Path.Combine(Path.GetTempPath(), "llmb-mixed-" + Guid.NewGuid().ToString("N"));
        try
        {
            string stats = QuantizeStage.Calibrate(model, dir, [], _ => { })!;
            using ICheckpoint checkpoint = QuantizeStage.OpenSource(model);
            PrecisionChoice first = MixedPrecision.Choose(checkpoint, model, stats), second = MixedPrecision.Choose(checkpoint, model, stats);
            string path = Path.Combine(dir, PrecisionChoice.FileName);
            Assert.IsTrue(first.Write(path), "written the first time");
            byte[] bytes = File.ReadAllBytes(path);
            Assert.IsFalse(second.Write(path), "the same choice leaves the file alone (no rebuild downstream)");
            CollectionAssert.AreEqual(bytes, File.ReadAllBytes(path));

            var candidates = WeightBudget.Candidates(model);
            Assert.AreEqual(BlockLinears, candidates.Count);
            CollectionAssert.AreEquivalent(candidates.Select(e => e.SourceTensor).ToArray(), first.Linears.Select(l => l.Tensor).ToArray(), "every block linear is listed once");
            int eight = first.Linears.Count(l => l.Bits == 8);
            Assert.IsTrue(eight > 0 && eight < BlockLinears, $"{eight} linears at w8: a budget between w4 and w8 mixes the widths");
            Assert.IsTrue(first.Bytes <= first.TargetBytes && first.BitsPerWeight <= 6.0 && first.BitsPerWeight > 4.625, $"{first.BitsPerWeight} bpw");
            Assert.IsTrue(first.Linears.All(l => l.Error4 > l.Error8 && l.Error8 >= 0), "8 bits always err less on the calibration data");

            // Every later stage reads the same widths back.
            var loaded = PrecisionChoice.Apply(model, path);
            Assert.AreEqual(eight, loaded.Owners.SelectMany(o => o.Entries).Count(e => e.Bits == 8));
            Console.WriteLine(MixedPrecision.Table(first));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void TheEmulatorRunsAMixedBModelWithinTheW4Thresholds()
    {
        var built = ExampleBuild.Get("w4bf16", extra: [("QuantizeBudget", "6.0bpw"), ("CalibrationSamples", "4"), ("CalibrationSeqLength", "32")]);
        var widths = built.Model.Owners.SelectMany(o => o.Entries).Where(e => e.Storage == WeightStorage.Quantized).Select(e => built.Model.SchemeOf(e).Bits).ToHashSet();
        CollectionAssert.AreEquivalent(new[] { 4, 8 }, widths.ToArray(), "the build holds both widths");
        // The graphs carry each linear's width: both appear among the block modules' A16MatMul ops.
        string modules = string.Concat(built.Model.Pieces.Where(p => p.Name.StartsWith("block_", StringComparison.Ordinal))
            .Select(p => File.ReadAllText(Path.Combine(built.Dir, p.Name + ".mlir"))));
        StringAssert.Contains(modules, "weight_bits = 8 : i64");
        StringAssert.Contains(modules, "weight_bits = 4 : i64");
        var lines = new List<string>();
        VerifyReport report = VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, "verify.json"), lines.Add);
        Console.WriteLine(string.Join("\n", lines));
        Assert.IsTrue(report.Passed, string.Join("; ", report.Failures));
        Assert.AreEqual(VerifyThresholds.For(built.Model.Weights), report.Thresholds, "a w4 build with some w8 linears meets the w4 mode's thresholds");
    }

    [TestMethod]
    public void TheDeviceMemoryCheckCountsEachLinearAtItsWidth()
    {
        var model = ExampleBuild.Resolve(Props());
        var chip = ChipProfile.Get(model.Options.Chip);
        long w4 = DeviceMemoryBudget.Estimate(model, chip).WeightBytes;
        var promoted = WeightBudget.Candidates(model).Take(5).ToList();
        var mixed = model.WithWidths(promoted.ToDictionary(e => e.SourceTensor, _ => 8));
        long extra = promoted.Sum(e => chip.AlignUp(WeightBudget.LinearBytes(e.Shape[0], e.Shape[1], 8, 64)) - chip.AlignUp(WeightBudget.LinearBytes(e.Shape[0], e.Shape[1], 4, 64)));
        Assert.AreEqual(w4 + extra, DeviceMemoryBudget.Estimate(mixed, chip).WeightBytes, "five linears at 8 bits add their extra half byte per weight");
    }

    [TestMethod]
    public void QuantizeLmHeadW8KeepsAnEightBitHeadInAW4Build()
    {
        var model = ExampleBuild.Resolve(Props(("QuantizeLmHead", "w8")));
        WeightEntry head = model.Weight(WeightRole.LmHead)!;
        Assert.AreEqual(WeightStorage.Quantized, head.Storage);
        Assert.AreEqual(8, model.SchemeOf(head).Bits);
        Assert.IsTrue(WeightBudget.Candidates(model).All(e => model.SchemeOf(e).Bits == 4), "the block linears keep the model's width");
        Assert.IsNull(ExampleBuild.Resolve(Props(("QuantizeLmHead", "true"))).Weight(WeightRole.LmHead)!.Bits, "true: the model's width, as before");

        // The built head: an 8-bit qweight [vocab, H], and the emulator's logits against the float reference.
        var figures = new List<string>();
        foreach (string value in new[] { "false", "true", "w8" })
        {
            var built = ExampleBuild.Get("w4bf16", extra: [("QuantizeLmHead", value)]);
            var report = VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, "verify.json"));
            figures.Add($"QuantizeLmHead={value}: logits min cosine {report.Logits.MinCosine:0.000000}, mean {report.Logits.MeanCosine:0.000000}, top-1 {report.Logits.Top1Agreement:P1}");
            Assert.IsTrue(report.Passed, value + ": " + string.Join("; ", report.Failures));
            if (value == "w8")
            {
                string npz = Path.Combine(built.Dir, "lm_head_top_weights.npz");
                using var reader = new NpzReader(npz);
                var entry = reader.Entries.Single(e => e.Key == WeightKeys.QWeight(built.Model.Weight(WeightRole.LmHead)!.Key));
                CollectionAssert.AreEqual(new long[] { built.Model.Config.VocabSize, built.Model.Config.HiddenSize }, entry.Shape.ToArray(), "one byte per weight");
            }
        }
        Console.WriteLine(string.Join("\n", figures));
    }

    [TestMethod]
    public void BadBudgetsAreCodedErrors()
    {
        void Refused(string code, params (string, string)[] extra)
        {
            var e = Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(Props(extra)));
            Assert.AreEqual(code, e.Code, e.Message);
        }
        Refused(ErrorCodes.BadQuantizeBudget, ("QuantizeBudget", "lots"));
        Refused(ErrorCodes.BadQuantizeBudget, ("QuantizeBudget", "5bits"));
        Refused(ErrorCodes.BadQuantizeBudget, ("QuantizeBudget", "-3MiB"));
        Refused(ErrorCodes.QuantizeBudgetOutOfRange, ("QuantizeBudget", "4.0bpw"));
        Refused(ErrorCodes.QuantizeBudgetOutOfRange, ("QuantizeBudget", "9bpw"));
        Refused(ErrorCodes.QuantizeBudgetOutOfRange, ("QuantizeBudget", "1MiB"));
        Refused(ErrorCodes.QuantizeBudgetOutOfRange, ("QuantizeBudget", "6bpw"), ("Quantize", "w8bf16"));
        Assert.AreEqual(WeightBudget.Parse(" 350mib "), new WeightBudget(350, WeightBudget.MiB));
        Assert.IsNotNull(ExampleBuild.Resolve(Props(("QuantizeBudget", "6.5bpw"))).Calibration?.Budget);
    }

    [TestMethod]
    public void LaterStagesRefuseAMissingWidthChoice()
    {
        var model = ExampleBuild.Resolve(Props(("QuantizeBudget", "6.0bpw")));
        string dir = Path.Combine(Path.GetTempPath(), "llmb-mixed-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string resolved = Path.Combine(dir, "resolved.json");
            File.WriteAllText(resolved, model.ToJson());
            Assert.IsNotNull(ResolvedModel.Load(resolved, withWidths: false).Calibration?.Budget);
            var e = Assert.ThrowsExactly<LlmBuildException>(() => ResolvedModel.Load(resolved));
            Assert.AreEqual(ErrorCodes.PrecisionChoiceStale, e.Code, e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
