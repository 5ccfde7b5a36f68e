using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>What each option changes, run through the interpreter and compared with the reference.</summary>
[TestClass]
public sealed class OptionTests
{
    private static readonly int[] Tokens = [12522, 5193, 264, 882, 11, 358, 2776, 537, 311, 387];

    private static ResolvedModel Tiny(Func<BuildOptions, BuildOptions> change) =>
        TestResolver.Resolve(TestResolver.TinyModelDir, change(TestResolver.Options(TestResolver.TinyModelDir, 64)));

    private static TestWeightSource Weights(ResolvedModel m) => new(m, ReferenceModelTests.TinyCheckpoint);

    private static void AssertCosine(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, string what, double min = 0.9999)
    {
        double cos = PieceChain.Cosine(actual, expected);
        Assert.IsTrue(cos >= min, $"{what}: cosine {cos:F7}");
    }

    [TestMethod]
    public void DynamicBlockIsCausalWithoutAMaskInput()
    {
        var dynamicModel = Tiny(o => o with { Dynamic = true, MaxInputLength = 16 });
        var staticModel = Tiny(o => o with { MaxInputLength = 16 });
        var dynamicBlock = new GraphInterpreter(PieceGraphBuilder.Build(dynamicModel, dynamicModel.Piece("block_1")), Weights(dynamicModel));
        var staticBlock = new GraphInterpreter(PieceGraphBuilder.Build(staticModel, staticModel.Piece("block_1")), Weights(staticModel));
        var rng = new Random(3);
        float[] x = Enumerable.Range(0, 16 * 64).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] pos = Enumerable.Range(0, 16).Select(i => (float)i).ToArray();
        var d = dynamicBlock.Run(new Dictionary<string, float[]> { ["input_states"] = x, ["position_ids"] = pos });
        var s = staticBlock.Run(new Dictionary<string, float[]> { ["input_states"] = x, ["position_ids"] = pos, ["attention_mask"] = PieceChain.CausalMask(16, 16, 0) });
        foreach (string output in s.Keys)
            for (int i = 0; i < s[output].Length; i++) Assert.AreEqual(s[output][i], d[output][i], 1e-5, output);
    }

    /// <summary>
    /// Prefill in two chunks: the first through <paramref name="firstPiece"/> (block_i or block_prompt_i), the second through
    /// block_kv_i with the first chunk's KV as history; both chunks' final hidden states match one reference forward.
    /// </summary>
    private static void TwoChunkPrefill(ResolvedModel model, string firstPiece, int firstLength)
    {
        var cfg = model.Config;
        int h = cfg.HiddenSize, kvRow = cfg.NumKvHeads * cfg.HeadDim, L = model.PrefillLength, hist = PieceGraphBuilder.HistoryLength(model);
        int[] first = Tokens[..4], second = Tokens[4..(4 + L)];
        var trace = new ReferenceTrace();
        new ReferenceModel(ReferenceModelTests.TinyCheckpoint, cfg).Forward([.. first, .. second], trace);
        var chain = new PieceChain(model, Weights(model));

        float[] Embed(int[] ids, int length)
        {
            var input = new float[length];
            for (int i = 0; i < ids.Length; i++) input[i] = ids[i];
            var outputs = chain.Run("embedding", new() { ["input_ids"] = PadIds(input, PieceGraphBuilder.EmbeddingLength(model)) });
            return outputs["embedding"].AsSpan(0, length * h).ToArray();
        }

        float[] x1 = Embed(first, firstLength), x2 = Embed(second, L);
        var histK = new float[cfg.NumLayers][];
        var histV = new float[cfg.NumLayers][];
        for (int layer = 0; layer < cfg.NumLayers; layer++)
        {
            var o = chain.Run(firstPiece.Replace("{i}", layer.ToString()), new()
            {
                ["input_states"] = x1, ["position_ids"] = Enumerable.Range(0, firstLength).Select(i => (float)i).ToArray(),
                ["attention_mask"] = PieceChain.CausalMask(firstLength, firstLength, 0),
            });
            x1 = o["output_states"];
            histK[layer] = new float[hist * kvRow];
            histV[layer] = new float[hist * kvRow];
            Array.Copy(o["k_cache"], histK[layer], first.Length * kvRow);
            Array.Copy(o["v_cache"], histV[layer], first.Length * kvRow);
        }
        // History rows ≥ 4 are padding: masked out; the new chunk's own keys follow causally.
        var mask = new float[L * (hist + L)];
        for (int i = 0; i < L; i++)
            for (int j = 0; j < hist + L; j++)
                mask[i * (hist + L) + j] = j < first.Length || (j >= hist && j - hist <= i) ? 0 : NetContract.MaskFill;
        for (int layer = 0; layer < cfg.NumLayers; layer++)
        {
            var o = chain.Run($"block_kv_{layer}", new()
            {
                ["input_states"] = x2, ["position_ids"] = Enumerable.Range(first.Length, L).Select(i => (float)i).ToArray(),
                ["attention_mask"] = mask, ["history_k"] = histK[layer], ["history_v"] = histV[layer],
            });
            x2 = o["output_states"];
            AssertCosine(o["k_cache"], trace.Keys[layer].AsSpan(first.Length * kvRow, L * kvRow), $"block_kv_{layer} k");
        }
        AssertCosine(x1.AsSpan(0, first.Length * h), trace.NormedHidden.AsSpan(0, first.Length * h), "first chunk");
        AssertCosine(x2, trace.NormedHidden.AsSpan(first.Length * h, L * h), "second chunk");
    }

    private static float[] PadIds(float[] ids, int length)
    {
        var padded = new float[length];
        ids.AsSpan(0, Math.Min(ids.Length, length)).CopyTo(padded);
        return padded;
    }

    [TestMethod]
    public void HistoryPrefillWithBlockKvMatchesOneForward() =>
        TwoChunkPrefill(Tiny(o => o with { UseHistoryKv = true, MaxInputLength = 4, MaxPrefillKvLength = 8 }), "block_{i}", 4);

    [TestMethod]
    public void SharedPromptThenBlockKvMatchesOneForward() =>
        TwoChunkPrefill(Tiny(o => o with { SharePrompt = true, MaxInputLength = 6, MaxPrefillKvLength = 4 }), "block_prompt_{i}", 4);

    [TestMethod]
    public void BatchedDecodeRunsEachSequenceIndependently()
    {
        var model = Tiny(o => o with { Batch = 2 });
        var cfg = model.Config;
        int h = cfg.HiddenSize, kvRow = cfg.NumKvHeads * cfg.HeadDim, s = model.SeqLength;
        int[][] prompts = [Tokens[..4], Tokens[2..9]];
        int[] next = [11, 358];
        var traces = new ReferenceTrace[2];
        var steps = new ReferenceTrace[2];
        for (int b = 0; b < 2; b++)
        {
            var reference = new ReferenceModel(ReferenceModelTests.TinyCheckpoint, cfg);
            traces[b] = new ReferenceTrace();
            reference.Forward(prompts[b], traces[b]);
            steps[b] = new ReferenceTrace();
            reference.Forward([next[b]], steps[b]);
        }
        var chain = new PieceChain(model, Weights(model));
        float[] embedded = chain.Run("embedding_cache", new() { ["input_ids"] = [next[0], next[1]] })["embedding_cache"];
        AssertCosine(embedded, [.. steps[0].Embeddings, .. steps[1].Embeddings], "embedding_cache batch");

        var mask = new float[2 * (s + 1)];
        for (int b = 0; b < 2; b++)
            for (int j = prompts[b].Length; j < s; j++) mask[b * (s + 1) + j] = NetContract.MaskFill;
        for (int layer = 0; layer < cfg.NumLayers; layer++)
        {
            var hk = new float[2 * s * kvRow];
            var hv = new float[2 * s * kvRow];
            for (int b = 0; b < 2; b++)
            {
                traces[b].Keys[layer].CopyTo(hk, b * s * kvRow);
                traces[b].Values[layer].CopyTo(hv, b * s * kvRow);
            }
            var o = chain.Run($"block_cache_{layer}", new()
            {
                ["input_states"] = [.. steps[0].LayerInputs[layer], .. steps[1].LayerInputs[layer]],
                ["position_ids"] = [prompts[0].Length, prompts[1].Length], ["attention_mask"] = mask,
                ["history_k"] = hk, ["history_v"] = hv,
            });
            for (int b = 0; b < 2; b++)
            {
                float[] expected = layer + 1 < cfg.NumLayers ? steps[b].LayerInputs[layer + 1] : steps[b].NormedHidden;
                AssertCosine(o["output_states"].AsSpan(b * h, h), expected, $"layer {layer} batch {b}");
                AssertCosine(o["k_cache"].AsSpan(b * kvRow, kvRow), steps[b].Keys[layer], $"layer {layer} batch {b} k");
            }
        }
        float[] ids = chain.Run("lm_head", new() { ["hidden_states"] = [.. steps[0].NormedHidden, .. steps[1].NormedHidden] })["token_id"];
        Assert.AreEqual(2, ids.Length);
    }

    [TestMethod]
    public void ZeroLoraNetsLeaveTheirInputsUnchanged()
    {
        var model = Tiny(o => o with { LoraMaxRank = 4, MaxInputLength = 8 });
        var chain = new PieceChain(model, Weights(model));
        var rng = new Random(5);
        float[] states = Enumerable.Range(0, 8 * 64).Select(_ => (float)rng.NextDouble()).ToArray();
        float[] ids = [1, 2, 3, 4, 5, 6, 7, 151935];
        CollectionAssert.AreEqual(states, chain.Run("embedding_lora", new() { ["input_ids"] = ids, ["input_states"] = states })["embedding_lora.lora_add"]);
        float[] logits = Enumerable.Range(0, model.Config.VocabSize).Select(i => (float)Math.Sin(i)).ToArray();
        CollectionAssert.AreEqual(logits, chain.Run("lm_head_lora", new() { ["input_states"] = states[..64], ["input_logits"] = logits })["lm_head_lora.lora_add"]);
        // LoRA builds return logits from lm_head (the runtime adds the LoRA logits, then picks).
        Assert.AreEqual(model.Config.VocabSize, chain.Run("lm_head", new() { ["hidden_states"] = states[..64] })["logits"].Length);
    }

    [TestMethod]
    public void SampleHeadAppliesPenaltyTemperatureTopKAndTopP()
    {
        var model = Tiny(o => o with { DoSample = true });
        var head = new GraphInterpreter(PieceGraphBuilder.Build(model, model.Piece("sample_head")), Weights(model));
        int vocab = model.Config.VocabSize, seq = model.SeqLength;
        var logits = new float[vocab];
        for (int i = 0; i < vocab; i++) logits[i] = (float)Math.Sin(i * 0.37) * 3;
        logits[42] = 20; logits[7] = 19; logits[99] = -25;
        var recent = new float[seq];
        recent[0] = 99;
        IReadOnlyDictionary<string, float[]> Run(float penalty, float temperature, int topK, float topP, float[]? ids = null) =>
            head.Run(new Dictionary<string, float[]>
            {
                ["m_logits"] = logits, ["input_ids"] = ids ?? recent, ["penalty"] = [penalty], ["temperature"] = [temperature],
                ["top_k"] = [topK], ["top_p"] = [topP],
            });

        var greedy = Run(1, 1, 1, 1);
        Assert.AreEqual(42f, greedy["token_idx"][0]);
        Assert.AreEqual(1f, greedy["probs"][0], 1e-6);
        Assert.AreEqual(0f, greedy["probs"][1..].Sum(), 1e-6);

        // Temperature over the kept top-k: softmax(top values / T); top_p = 1 keeps them all.
        var t = Run(1, 2, 2, 1.1f);
        float p42 = 1 / (1 + MathF.Exp((19 - 20) / 2f));
        Assert.AreEqual(p42, t["probs"][0], 1e-5);
        Assert.AreEqual(1 - p42, t["probs"][1], 1e-5);
        CollectionAssert.AreEqual(new[] { 42f, 7f }, t["token_idx"][..2]);

        // Penalty: a seen positive logit is divided, a seen negative one multiplied.
        var recent42 = new float[seq];
        recent42[0] = 42; recent42[1] = 99;
        var penalized = Run(1.2f, 1, 2, 1.1f, recent42);
        CollectionAssert.AreEqual(new[] { 7f, 42f }, penalized["token_idx"][..2]);
        Assert.AreEqual(1 / (1 + MathF.Exp(20 / 1.2f - 19)), penalized["probs"][0], 1e-5);

        // top_p = 0 keeps only the first five candidates.
        var nucleus = Run(1, 1, 50, 0);
        Assert.AreEqual(0f, nucleus["probs"][5..].Sum(), 1e-6);
        Assert.AreEqual(1f, nucleus["probs"][..5].Sum(), 1e-5);
    }
}
