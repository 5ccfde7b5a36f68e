using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Checkpoints;

[TestClass]
public sealed class Fp8CheckpointTests
{
    private static string FixtureDir => TestResolver.Fixture(Path.Combine("fp8", "tiny-qwen2-fp8"));

    /// <summary>The fixture's float32 twin holds what an exact dequantizer must produce, bit for bit (partial edge blocks included).</summary>
    [TestMethod]
    public void DequantizesEveryTensorBitExactly()
    {
        using ICheckpoint fp8 = CheckpointLoader.Open(FixtureDir);
        using ICheckpoint expected = CheckpointLoader.Open(TestResolver.Fixture(Path.Combine("fp8", "tiny-qwen2-fp8-dequant")));
        CollectionAssert.AreEqual(expected.TensorNames.ToList(), fp8.TensorNames.ToList(), "the scales are folded into their weights");
        foreach (string name in expected.TensorNames)
        {
            float[] a = new float[expected.GetInfo(name).ElementCount], b = new float[a.Length];
            expected.ReadFloat32(name, a);
            fp8.ReadFloat32(name, b);
            CollectionAssert.AreEqual(a, b, name);
            // Streaming reads from an offset inside a row give the same values.
            float[] part = new float[Math.Min(300, a.Length - 7)];
            fp8.ReadFloat32(name, 7, part);
            CollectionAssert.AreEqual(a.AsSpan(7, part.Length).ToArray(), part, name + " at 7");
        }
        Assert.AreEqual(TensorDType.F32, fp8.GetInfo("model.layers.0.mlp.down_proj.weight").DType);
    }

    [TestMethod]
    public void AutoPicksW8AndTheQuantizationConfigIsNotUnpacked()
    {
        var config = ModelConfig.Load(FixtureDir);
        Assert.IsNull(PreQuantizedFormat.FromConfig(config.QuantizationConfig, "config.json"));
        var (quantize, activation, scheme) = QuantizationResolver.Resolve(config, "auto", 64, false, new List<LlmBuildWarning>());
        Assert.AreEqual(("w8bf16", "bf16"), (quantize, activation));
        Assert.AreEqual(8, scheme.Bits);
        Assert.AreEqual("w4bf16", QuantizationResolver.Resolve(config, "w4bf16", 64, false, new List<LlmBuildWarning>()).Quantize, "requantized to any mode");
    }

    [TestMethod]
    public void MissingOrMisshapenScalesAreCodedErrors()
    {
        string dir = TestFiles.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(FixtureDir, "config.json")));
        byte[] codes = new byte[192 * 200];
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), [new("w.weight", "F8_E4M3", [192, 200], codes)]);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir));
        Assert.AreEqual(ErrorCodes.BadFp8Weight, e.Code);
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"),
            [new("w.weight", "F8_E4M3", [192, 200], codes), new("w.weight_scale_inv", "F32", [1, 2], new byte[8])]);
        Assert.AreEqual(ErrorCodes.BadFp8Weight, Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir)).Code);
        // Scale [2, 2] fits; an E5M2 weight reads as the upper byte of an IEEE half times its block's scale.
        float[] scales = [2f, 3f, 5f, 7f];
        byte[] e5m2 = new byte[192 * 200];
        e5m2[0] = 0x3C; // 1.0
        e5m2[150] = 0xC0; // -2.0, column 150: second column block
        e5m2[191 * 200 + 199] = 0x7C; // +inf
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"),
            [new("w.weight", "F8_E5M2", [192, 200], e5m2), new("w.weight_scale_inv", "F32", [2, 2], TestFiles.Bytes(scales))]);
        using ICheckpoint c = CheckpointLoader.Open(dir);
        float[] w = new float[192 * 200];
        c.ReadFloat32("w.weight", w);
        Assert.AreEqual(2f, w[0]);
        Assert.AreEqual(-6f, w[150]);
        Assert.IsTrue(float.IsPositiveInfinity(w[^1]));
        Assert.IsFalse(c.Contains("w.weight_scale_inv"));
        Assert.AreEqual(ErrorCodes.TensorNotFound, Assert.ThrowsExactly<LlmBuildException>(() => c.GetInfo("w.weight_scale_inv")).Code);
        // A config without weight_block_size is refused by name.
        File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(FixtureDir, "config.json")).Replace("weight_block_size", "block"));
        Assert.AreEqual(ErrorCodes.QuantizationConfigIncomplete, Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir)).Code);
    }
}
