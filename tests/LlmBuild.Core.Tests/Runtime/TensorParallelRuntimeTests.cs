using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Runtime;

/// <summary>A model built for two devices runs as cascades in the emulator and computes what the one-device build computes.</summary>
[TestClass]
public sealed class TensorParallelRuntimeTests
{
    [TestMethod]
    [DataRow("bf16", 64)]
    [DataRow("w4bf16", 32)]
    public void TwoDeviceBuildMatchesOneDeviceBuild(string quantize, int group)
    {
        var one = ExampleBuild.Get(quantize, seqLength: 48, groupSize: group);
        var two = ExampleBuild.Get(quantize, seqLength: 48, groupSize: group, extra: ("NumDevice", "2"));
        using var e1 = LlmEmulator.Load(one.BModel);
        using var e2 = LlmEmulator.Load(two.BModel);
        Assert.AreEqual(1, e1.Devices);
        Assert.AreEqual(2, e2.Devices);
        Assert.AreEqual(2, e2.Runtime.DeviceCount);
        Assert.IsTrue(e2.Runtime.Group("block_0").IsCascade);
        Assert.AreEqual(3, e2.Runtime.Group("block_cache_0").Steps.Count, "attention, mlp, reduce");
        Assert.AreEqual(e1.KvHeads, e2.KvHeads, "the devices' KV heads add up to the model's");

        int[] ids = [9707, 11, 1879, 374, 264, 1273, 315, 279, 2041, 13];
        var t1 = new EmulatorTrace();
        var t2 = new EmulatorTrace();
        float[] l1 = e1.Prefill(ids.AsSpan(0, 6), allPositions: true, t1);
        float[] l2 = e2.Prefill(ids.AsSpan(0, 6), allPositions: true, t2);
        // Only the summation order differs (partial sums per device, then the all-reduce): f32 rounding, then the bf16 outputs.
        Assert.IsTrue(VerifyStage.Cosine(l1, l2) > 0.99999, $"prefill logits cosine {VerifyStage.Cosine(l1, l2)}");
        for (int layer = 0; layer < e1.NumLayers; layer++)
        {
            // With several devices the final norm stays in lm_head (DESIGN §7): the last block's outputs differ by it.
            bool sameOutput = layer + 1 < e1.NumLayers || one.Model.FinalNormInLastBlock == two.Model.FinalNormInLastBlock;
            if (sameOutput) Assert.IsTrue(VerifyStage.Cosine(t1.BlockOutputs[layer], t2.BlockOutputs[layer]) > 0.9999, $"layer {layer} output");
            Assert.IsTrue(VerifyStage.Cosine(t1.Keys[layer], t2.Keys[layer]) > 0.9999, $"layer {layer} keys (device shards joined in head order)");
            Assert.IsTrue(VerifyStage.Cosine(t1.Values[layer], t2.Values[layer]) > 0.9999, $"layer {layer} values");
        }
        long before = e2.Runtime.TransferredBytes;
        for (int i = 6; i < ids.Length; i++)
        {
            float[] d1 = e1.Decode(ids[i]), d2 = e2.Decode(ids[i]);
            Assert.IsTrue(VerifyStage.Cosine(d1, d2) > 0.99999, $"decode position {i}");
            Assert.AreEqual(LlmEmulator.ArgMax(d1), LlmEmulator.ArgMax(d2), $"decode position {i}");
        }
        // Per layer and token: two all-reduces (attention, mlp), in each a device sends its partial ([1,1,H] f32) to the other.
        long hidden = e2.HiddenSize;
        Assert.AreEqual((ids.Length - 6) * e2.NumLayers * 2L * 2 * hidden * 4, e2.Runtime.TransferredBytes - before);
        Assert.IsTrue(e2.Runtime.DeviceBytes(1) > 0 && e2.Runtime.DeviceBytes(1) < e2.Runtime.DeviceBytes(0), "device 1 holds block shards only");

        var lines = new List<string>();
        VerifyReport r = VerifyStage.Run(two.Model, two.BModel, Path.Combine(two.Dir, "verify.json"), lines.Add);
        foreach (string l in lines) Console.WriteLine(l);
        Assert.IsTrue(r.Passed, string.Join("; ", r.Failures));
    }
}
