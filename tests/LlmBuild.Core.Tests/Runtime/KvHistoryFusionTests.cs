using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Runtime;

/// <summary>
/// The decode nets' attention reads the KV history where it lies instead of through the program's Convert and Concat
/// (<see cref="KvHistoryFusion"/>): found in the example's decode nets, and the logits bit for bit those of the program
/// as written, at Batch=1 and Batch=2 and at 4 bits.
/// </summary>
[TestClass]
public sealed class KvHistoryFusionTests
{
    [TestMethod]
    [DataRow("bf16", 1)]
    [DataRow("bf16", 2)]
    [DataRow("w4bf16", 1)]
    public void FusedDecodeMatchesTheProgramAsWritten(string mode, int batch)
    {
        var built = batch == 1 ? ExampleBuild.Get(mode, seqLength: 48) : ExampleBuild.Get(mode, seqLength: 48, extra: ("Batch", batch.ToString()));
        using var emu = LlmEmulator.Load(built.BModel);
        KvHistoryFusion? fusion = emu.Runtime.Net(emu.Runtime.NetNames.First(n => n.StartsWith("block_cache_", StringComparison.Ordinal))).Fusion;
        Assert.IsNotNull(fusion, "the decode net's attention reads a Convert-Concat history");
        Assert.AreEqual(1, fusion.Attention.Count);
        Assert.AreEqual(4, fusion.Skip.Count(s => s), "the history's two Converts and two Concats are skipped");

        int[] prompt = [9707, 11, 1879, 374];
        var runs = new List<float[]>[2];
        foreach (bool fused in new[] { true, false })
        {
            KvHistoryFusion.Enabled = fused;
            try
            {
                var steps = runs[fused ? 0 : 1] = [];
                for (int slot = 0; slot < batch; slot++) emu.Prefill(prompt[..(2 + slot)], slot: slot);
                var ids = Enumerable.Range(0, batch).Select(b => 1000 + b).ToArray();
                for (int step = 0; step < 5; step++)
                {
                    float[] logits = batch == 1 ? emu.Decode(ids[0]) : emu.DecodeBatch(ids);
                    steps.Add(logits);
                    for (int b = 0; b < batch; b++) ids[b] = LlmEmulator.ArgMax(logits.AsSpan(b * emu.VocabSize, emu.VocabSize));
                }
            }
            finally
            {
                KvHistoryFusion.Enabled = true;
            }
        }
        for (int step = 0; step < runs[0].Count; step++) CollectionAssert.AreEqual(runs[1][step], runs[0][step], $"step {step}");
    }
}
