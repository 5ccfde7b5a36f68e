using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Tests.Checkpoints;

namespace LlmBuild.Core.Tests.Quantization;

[TestClass]
public sealed class QuantizationResolverTests
{
    private static ModelConfig Config(string torchDtype, string? quantizationConfig = null) =>
        ModelConfig.Load(Path.Combine(TestFiles.RepoRoot(), "examples", "tiny-qwen2", "checkpoint")) with
        {
            TorchDtype = torchDtype,
            QuantizationConfig = quantizationConfig is null ? null : (JsonObject)JsonNode.Parse(quantizationConfig)!,
        };

    private const string Gptq4 = """{"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": true, "desc_act": false}""";

    [TestMethod]
    [DataRow("bfloat16", "bf16")]
    [DataRow("float16", "f16")]
    [DataRow("float32", "bf16")]
    public void AutoFollowsTorchDtype(string torchDtype, string expected)
    {
        var warnings = new List<LlmBuildWarning>();
        var (mode, activation, scheme) = QuantizationResolver.Resolve(Config(torchDtype), "auto", 64, false, warnings);
        Assert.AreEqual(expected, mode);
        Assert.AreEqual(expected, activation);
        Assert.IsFalse(scheme.IsQuantized);
        Assert.AreEqual(0, warnings.Count);
    }

    [TestMethod]
    public void AutoFollowsQuantizationConfig()
    {
        var warnings = new List<LlmBuildWarning>();
        var (mode, activation, scheme) = QuantizationResolver.Resolve(Config("float16", Gptq4), "auto", 64, false, warnings);
        Assert.AreEqual("w4f16", mode);
        Assert.AreEqual("f16", activation);
        Assert.AreEqual(new QuantScheme(4, 128, true), scheme);
        Assert.AreEqual(0, warnings.Count);
    }

    [TestMethod]
    public void ForcedModesOnAPlainCheckpoint()
    {
        var warnings = new List<LlmBuildWarning>();
        var (mode, activation, scheme) = QuantizationResolver.Resolve(Config("bfloat16"), "w4bf16", 128, true, warnings);
        Assert.AreEqual(("w4bf16", "bf16", new QuantScheme(4, 128, true)), (mode, activation, scheme));
        Assert.AreEqual(0, warnings.Count);
        (mode, activation, scheme) = QuantizationResolver.Resolve(Config("bfloat16"), "w8f16", 0, false, warnings);
        Assert.AreEqual(("w8f16", "f16", new QuantScheme(8, 0, false)), (mode, activation, scheme));
        Assert.AreEqual(1, warnings.Count, "f16 on a bf16 checkpoint is a warning");
        Assert.AreEqual(ErrorCodes.QuantizeDtypeDiffers, warnings[0].Code);
    }

    [TestMethod]
    public void ForcedBitsOtherThanThePreQuantizedSourceIsAnError()
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => QuantizationResolver.Resolve(Config("float16", Gptq4), "w8f16", 64, false, new List<LlmBuildWarning>()));
        Assert.AreEqual(ErrorCodes.QuantizeConflictsWithSource, e.Code);
        StringAssert.Contains(e.Message, "4 bits");
    }

    [TestMethod]
    public void DequantizingAPreQuantizedSourceIsAWarning()
    {
        var warnings = new List<LlmBuildWarning>();
        var (mode, _, scheme) = QuantizationResolver.Resolve(Config("float16", Gptq4), "f16", 64, false, warnings);
        Assert.AreEqual("f16", mode);
        Assert.IsFalse(scheme.IsQuantized);
        Assert.AreEqual(1, warnings.Count);
        Assert.AreEqual(ErrorCodes.QuantizeDtypeDiffers, warnings[0].Code);
        warnings.Clear();
        (mode, _, scheme) = QuantizationResolver.Resolve(Config("float16", Gptq4), "w4f16", 32, false, warnings);
        Assert.AreEqual(new QuantScheme(4, 128, true), scheme, "the source's grouping wins");
        Assert.AreEqual(1, warnings.Count, "an explicit QGroupSize that differs is reported");
    }

    [TestMethod]
    public void ConfigMissingAFieldIsAClearError()
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => QuantizationResolver.Resolve(Config("float16", """{"quant_method": "gptq", "bits": 4}"""), "auto", 64, false, new List<LlmBuildWarning>()));
        Assert.AreEqual(ErrorCodes.QuantizationConfigIncomplete, e.Code);
        StringAssert.Contains(e.Message, "group_size");
    }
}
