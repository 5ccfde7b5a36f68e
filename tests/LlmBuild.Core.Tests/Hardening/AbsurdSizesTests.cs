using System.Diagnostics;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>
/// Issue 19, cause 5: sizes that overflow when multiplied are coded errors, and a build whose device memory cannot hold
/// the model fails at resolve, in well under a second, instead of after quantize and export.
/// </summary>
[TestClass]
public sealed class AbsurdSizesTests
{
    [TestMethod]
    public void SafetensorsShapeWhoseBytesOverflowIsACodedError()
    {
        string dir = TestFiles.TempDir();
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), [new("a", "F32", [2, 2], TestFiles.Bytes(new[] { 1f, 2f, 3f, 4f }))],
            json => json.Replace("[2,2]", "[4294967296,4294967296,4]", StringComparison.Ordinal));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir).Dispose());
        Assert.AreEqual(ErrorCodes.BadTensorOffsets, e.Code);
        StringAssert.Contains(e.Message, "'a'");
        StringAssert.Contains(e.Message, "[4294967296, 4294967296, 4]");
    }

    [TestMethod]
    public void NpyShapeWhoseBytesOverflowIsACodedError()
    {
        byte[] header = NpyFormat.EncodeHeader("<f4", [4294967296, 4294967296, 4]);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => NpyFormat.DecodeHeader(header, "w.npz/a.npy"));
        Assert.AreEqual(ErrorCodes.BadNumpyFile, e.Code);
        StringAssert.Contains(e.Message, "larger than any file");
    }

    [TestMethod]
    public void RotaryTablesLargerThanAnArrayAreACodedError()
    {
        ModelConfig config = ModelConfig.Load(ExampleBuild.ModelDir);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => RotaryTables.Compute(config, 999999999));
        Assert.AreEqual(ErrorCodes.GraphBadShape, e.Code);
        StringAssert.Contains(e.Message, "SeqLength");
    }

    [TestMethod]
    [DataRow("4000000")]
    [DataRow("100000000")]
    [DataRow("999999999")]
    [DataRow("2147483647")]
    public void SeqLengthBeyondDeviceMemoryFailsAtResolveInUnderASecond(string seqLength)
    {
        var props = new Dictionary<string, string?> { ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = seqLength, ["Quantize"] = "w4bf16", ["QGroupSize"] = "64" };
        try { ExampleBuild.Resolve(props); } catch (LlmBuildException) { } // warm up: the measured call is not the first parse and JIT
        var watch = Stopwatch.StartNew();
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(props));
        watch.Stop();
        Assert.AreEqual(ErrorCodes.DeviceMemoryOverflow, e.Code, e.Message);
        StringAssert.Contains(e.Message, $"SeqLength={seqLength}");
        Assert.IsTrue(watch.Elapsed < TimeSpan.FromSeconds(1), $"refused after {watch.Elapsed.TotalSeconds:0.00} s");
    }

    [TestMethod]
    public void TheResolveEstimateAdmitsWhatCodegenAdmits()
    {
        // The example at its largest position count builds (the codegen budget passes), so the earlier estimate must too.
        var props = new Dictionary<string, string?> { ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = "2048", ["Quantize"] = "w4bf16", ["QGroupSize"] = "64" };
        var model = ExampleBuild.Resolve(props);
        var chip = ChipProfile.Get(model.Options.Chip);
        var estimate = DeviceMemoryBudget.Estimate(model, chip);
        Assert.IsTrue(estimate.TotalBytes < estimate.BudgetBytes);
        Assert.IsTrue(estimate.ActivationBytes >= 2048L * 2048 * 2, "the prefill mask alone is L² × 2 bytes");
    }
}
