using TP = LlmBuild.Core.Plan.TensorParallel;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Tests.Graph;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.TensorParallel;

/// <summary>
/// The 3·D shard graphs of a block, run by the interpreter with the all-reduce done here, against the whole block run
/// by the same interpreter from the same stored weights. Only the order of the partial sums differs, so the tolerance
/// is max |split − whole| ≤ 1e-4 · max |whole| on output_states, k_cache and v_cache (k/v gathered by heads).
/// </summary>
[TestClass]
public sealed class ShardGraphTests
{
    private const double Tolerance = 1e-4;

    /// <summary>A small llama with attention biases (an o_proj bias, which must be added once) and 2 kv heads.</summary>
    private const string LlamaWithBias = """
    {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
     "intermediate_size": 128, "vocab_size": 257, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "attention_bias": true,
     "max_position_embeddings": 4096, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu"}
    """;

    /// <summary>A qwen3 (q/k norms) with 8 heads and 4 kv heads, to split across 4 devices.</summary>
    private const string Qwen3FourKvHeads = """
    {"model_type": "qwen3", "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
     "head_dim": 8, "intermediate_size": 96, "vocab_size": 300, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
     "max_position_embeddings": 4096, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "hidden_act": "silu"}
    """;

    private static ResolvedModel Tiny(Func<BuildOptions, BuildOptions> change) =>
        TestResolver.Resolve(TestResolver.TinyModelDir, change(TestResolver.Options(TestResolver.TinyModelDir, 64) with { MaxInputLength = 16 }));

    private static double[] Compare(ResolvedModel model, ICheckpoint checkpoint, string pieceName, int seed = 1)
    {
        Piece piece = model.Piece(pieceName);
        var weights = new TestWeightSource(model, checkpoint);
        var inputs = SplitRun.Inputs(PieceGraphBuilder.Build(model, piece), seed);
        var whole = SplitRun.RunWhole(model, piece, weights, inputs);
        var split = SplitRun.RunSplit(model, piece, weights, inputs);
        var diffs = new[] { "output_states", "k_cache", "v_cache" }.Select(n => SplitRun.RelativeDiff(split[n], whole[n])).ToArray();
        Console.WriteLine($"{model.Quantize} g{model.Weights.GroupSize} D={TP.Devices(model)} {pieceName}: relative max diff output {diffs[0]:E2}, k {diffs[1]:E2}, v {diffs[2]:E2}");
        for (int i = 0; i < diffs.Length; i++)
            Assert.IsTrue(diffs[i] <= Tolerance, $"{pieceName} output {i}: relative diff {diffs[i]:E3} > {Tolerance}");
        return diffs;
    }

    [TestMethod]
    public void Bf16BlockAndBlockCacheMatchTheWholeBlock()
    {
        var model = Tiny(o => o with { NumDevice = 2 });
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_0");
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_cache_1");
    }

    [TestMethod]
    public void W4Group32BlockAndBlockCacheMatchTheWholeBlock()
    {
        var model = Tiny(o => o with { NumDevice = 2, Quantize = "w4bf16", QGroupSize = 32 });
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_1");
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_cache_2");
    }

    [TestMethod]
    public void W8PerChannelKeepsWholeRowScalesOnRowParallelSlices()
    {
        var model = Tiny(o => o with { NumDevice = 2, Quantize = "w8bf16", QGroupSize = 0 });
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_cache_0");
        var down = PieceGraphBuilder.BuildShard(model, model.Piece("block_0"), 1, 1).Weights.Single(w => w.Key.EndsWith("down_proj.scales", StringComparison.Ordinal));
        Assert.IsNull(down.Slice, "per-channel scales span the whole row, so a K slice keeps them whole");
        CollectionAssert.AreEqual(new long[] { 64, 1 }, down.Shape);
    }

    [TestMethod]
    public void BlockKvWithHistoryMatchesTheWholeBlock()
    {
        var model = Tiny(o => o with { NumDevice = 2, UseHistoryKv = true });
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_kv_3");
    }

    [TestMethod]
    public void DynamicBlockWithoutMaskMatchesTheWholeBlock()
    {
        var model = Tiny(o => o with { NumDevice = 2, Dynamic = true });
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_2");
    }

    [TestMethod]
    public void FinalNormOfTheLastBlockIsAppliedInTheReduceStep()
    {
        // The resolver moves the final norm to lm_head for NumDevice > 1; a block that still carries it must apply it once, after the reduce.
        var fused = Tiny(o => o);
        var model = fused with { Options = fused.Options with { NumDevice = 2 } };
        Assert.IsTrue(model.FinalNormInLastBlock);
        var reduce = PieceGraphBuilder.BuildShard(model, model.Piece("block_3"), 2, 0);
        Assert.AreEqual("top.RMSNorm", reduce.Ops[^1].Kind);
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_3");
        Compare(model, ReferenceModelTests.TinyCheckpoint, "block_cache_3");
    }

    [TestMethod]
    public void OProjBiasIsAddedOnceInTheReduceStep()
    {
        var (dir, checkpoint) = SyntheticModels.Create("llama-tp-bias", LlamaWithBias);
        var model = TestResolver.Resolve(dir, TestResolver.Options(dir, 64) with { MaxInputLength = 16, NumDevice = 2 });
        Assert.IsNotNull(model.Weight(WeightRole.OBias, 0), "the synthetic llama has an o_proj bias");
        for (int device = 0; device < 2; device++)
        {
            Assert.IsFalse(PieceGraphBuilder.BuildShard(model, model.Piece("block_0"), 0, device).Weights.Any(w => w.Key.EndsWith("o_proj.bias", StringComparison.Ordinal)));
            Assert.IsTrue(PieceGraphBuilder.BuildShard(model, model.Piece("block_0"), 1, device).Weights.Any(w => w.Key.EndsWith("o_proj.bias", StringComparison.Ordinal)));
        }
        Compare(model, checkpoint, "block_0");
        Compare(model, checkpoint, "block_cache_1");
    }

    

    [TestMethod]
    public void FourDevicesWithQkNormsMatchTheWholeBlock()
    {
        var (dir, checkpoint) = SyntheticModels.Create("qwen3-tp4", Qwen3FourKvHeads);
        var model = TestResolver.Resolve(dir, TestResolver.Options(dir, 64) with { MaxInputLength = 16, NumDevice = 4 });
        Compare(model, checkpoint, "block_1");
        Compare(model, checkpoint, "block_cache_0");
    }

    [TestMethod]
    public void ShardsFollowTheContract()
    {
        var model = Tiny(o => o with { NumDevice = 2, Quantize = "w4bf16", QGroupSize = 32 });
        Piece cache = model.Piece("block_cache_0");
        PieceGraph s0 = PieceGraphBuilder.BuildShard(model, cache, 0, 1);
        Assert.AreEqual("block_cache_0_s0_d1", s0.Name);
        CollectionAssert.AreEqual(new[] { "input_states", "position_ids", "attention_mask", "history_k", "history_v" }, s0.Inputs.ToArray());
        CollectionAssert.AreEqual(new[] { "attn_partial_1", "k_cache", "v_cache" }, s0.Outputs.ToArray());
        CollectionAssert.AreEqual(new long[] { 1, 64, 1, 16 }, s0.Tensor("history_k").Shape);
        CollectionAssert.AreEqual(new long[] { 1, 1, 1, 16 }, s0.Tensor("k_cache").Shape);
        CollectionAssert.AreEqual(new long[] { 1, 1, 64 }, s0.Tensor("attn_partial_1").Shape);
        // Device 1 owns q rows [32, 64) (heads 2, 3), kv rows [16, 32) (kv head 1) and o_proj input columns [32, 64).
        GraphWeight Weight(PieceGraph g, string suffix) => g.Weights.Single(w => w.Key.EndsWith(suffix, StringComparison.Ordinal));
        Assert.AreEqual((0, 32L, 32L), SliceOf(Weight(s0, "q_proj.qweight")));
        Assert.AreEqual((0, 32L, 32L), SliceOf(Weight(s0, "q_proj.bias")));
        Assert.AreEqual((0, 16L, 16L), SliceOf(Weight(s0, "k_proj.scales")));
        Assert.AreEqual((1, 16L, 16L), SliceOf(Weight(s0, "o_proj.qweight")), "4-bit: columns 32..63 are bytes 16..31");
        Assert.AreEqual((1, 1L, 1L), SliceOf(Weight(s0, "o_proj.scales")), "group 32: columns 32..63 are group 1");
        Assert.IsNull(Weight(s0, "input_layernorm.weight").Slice);

        PieceGraph s1 = PieceGraphBuilder.BuildShard(model, cache, 1, 0);
        CollectionAssert.AreEqual(new[] { "input_states", "attn_partial_0", "attn_partial_1" }, s1.Inputs.ToArray());
        CollectionAssert.AreEqual(new[] { "residual_0", "mlp_partial_0" }, s1.Outputs.ToArray());
        Assert.AreEqual((0, 0L, 96L), SliceOf(Weight(s1, "gate_proj.qweight")));
        Assert.AreEqual((1, 0L, 48L), SliceOf(Weight(s1, "down_proj.qweight")));
        Assert.AreEqual((1, 0L, 3L), SliceOf(Weight(s1, "down_proj.qzeros")));

        PieceGraph s2 = PieceGraphBuilder.BuildShard(model, cache, 2, 1);
        CollectionAssert.AreEqual(new[] { "residual_1", "mlp_partial_0", "mlp_partial_1" }, s2.Inputs.ToArray());
        CollectionAssert.AreEqual(new[] { "output_states" }, s2.Outputs.ToArray());
        Assert.AreEqual(0, s2.Weights.Count);

        // block_i and block_cache_i shards use the same weight slices, so their coefficient blobs can be shared.
        for (int step = 0; step < TP.Steps; step++)
            for (int device = 0; device < 2; device++)
            {
                var a = PieceGraphBuilder.BuildShard(model, model.Piece("block_0"), step, device).Weights.Select(Describe);
                var b = PieceGraphBuilder.BuildShard(model, cache, step, device).Weights.Select(Describe);
                CollectionAssert.AreEquivalent(a.ToArray(), b.ToArray(), $"step {step} device {device}");
            }
    }

    private static (int, long, long) SliceOf(GraphWeight w) => w.Slice is { } s ? (s.Axis, s.Start, s.Length) : (-1, 0, 0);

    private static string Describe(GraphWeight w) => $"{w.Key} {w.DType} [{string.Join(",", w.Shape)}] {SliceOf(w)}";

    [TestMethod]
    public void WholePiecesAreUnchangedAndOnlyBlocksSplit()
    {
        var model = Tiny(o => o with { NumDevice = 2 });
        Assert.IsTrue(model.Pieces.Where(p => p.Name.StartsWith("block", StringComparison.Ordinal)).All(p => TP.IsSplit(model, p)));
        Assert.IsFalse(model.Pieces.Where(p => !p.Name.StartsWith("block", StringComparison.Ordinal)).Any(p => TP.IsSplit(model, p)));
        Assert.IsFalse(TP.IsSplit(Tiny(o => o), model.Piece("block_0")));
        Assert.ThrowsExactly<LlmBuildException>(() => PieceGraphBuilder.BuildShard(model, model.Piece("lm_head"), 0, 0));
        Assert.IsTrue(PieceGraphBuilder.Build(model, model.Piece("block_0")).Weights.All(w => w.Slice is null));
        Assert.ThrowsExactly<InvalidOperationException>(() => MlirWriter.Write(PieceGraphBuilder.BuildShard(model, model.Piece("block_0"), 0, 0), "x.npz"));
    }

    [TestMethod]
    public void WeightSliceCopiesRowsAndColumns()
    {
        float[] m = Enumerable.Range(0, 12).Select(i => (float)i).ToArray(); // [3, 4]
        CollectionAssert.AreEqual(new float[] { 4, 5, 6, 7, 8, 9, 10, 11 }, new WeightSlice(0, 1, 2, [3, 4]).Apply<float>(m));
        CollectionAssert.AreEqual(new float[] { 1, 2, 5, 6, 9, 10 }, new WeightSlice(1, 1, 2, [3, 4]).Apply<float>(m));
        byte[] bytes = Enumerable.Range(0, 24).Select(i => (byte)i).ToArray(); // [3, 4] of 2-byte elements
        CollectionAssert.AreEqual(new byte[] { 6, 7, 14, 15, 22, 23 }, new WeightSlice(1, 3, 1, [3, 4]).ApplyBytes(bytes, 2));
        Assert.ThrowsExactly<InvalidOperationException>(() => new WeightSlice(1, 3, 2, [3, 4]).Apply<float>(m));
    }
}
