using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>Exported pieces, run by the interpreter, against the f32 reference forward.</summary>
[TestClass]
public sealed class InterpreterTests
{
    private static readonly int[] Prompt = [12522, 5193, 264, 882];

    private sealed record Case(string Name, string Dir, ICheckpoint Checkpoint, int[] Prompt);

    private static Case Tiny() => new("tiny-qwen2", TestResolver.TinyModelDir, ReferenceModelTests.TinyCheckpoint, Prompt);

    private static Case Synthetic(string name, string json)
    {
        var (dir, checkpoint) = SyntheticModels.Create(name, json);
        return new(name, dir, checkpoint, [5, 77, 3, 120, 9, 41]);
    }

    private static ResolvedModel Resolve(Case c, Func<BuildOptions, BuildOptions>? change = null)
    {
        var options = TestResolver.Options(c.Dir, 64) with { MaxInputLength = 16 };
        return TestResolver.Resolve(c.Dir, change is null ? options : change(options));
    }

    private static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double minCosine, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        double cos = PieceChain.Cosine(actual, expected);
        Assert.IsTrue(cos >= minCosine, $"{what}: cosine {cos:F7} < {minCosine}");
    }

    /// <summary>Each piece, fed the reference's inputs, reproduces the reference's outputs (prefill of the prompt, then one decode step).</summary>
    private static void PerPieceAgainstReference(Case c, ResolvedModel model, double minCosine)
    {
        var cfg = model.Config;
        int n = c.Prompt.Length, len = model.PrefillLength, h = cfg.HiddenSize, kvRow = cfg.NumKvHeads * cfg.HeadDim, s = model.SeqLength;
        var reference = new ReferenceModel(c.Checkpoint, cfg);
        var trace = new ReferenceTrace();
        float[] logits = reference.Forward(c.Prompt, trace);
        var chain = new PieceChain(model, new TestWeightSource(model, c.Checkpoint));

        var ids = new float[len];
        for (int i = 0; i < n; i++) ids[i] = c.Prompt[i];
        float[] embedded = chain.Run("embedding", new() { ["input_ids"] = ids })["embedding"];
        AssertClose(embedded.AsSpan(0, n * h), trace.Embeddings, minCosine, "embedding");

        var positions = Enumerable.Range(0, len).Select(i => (float)i).ToArray();
        float[] mask = PieceChain.CausalMask(len, len, 0);
        for (int layer = 0; layer < cfg.NumLayers; layer++)
        {
            var input = new float[len * h];
            trace.LayerInputs[layer].CopyTo(input, 0);
            var o = chain.Run($"block_{layer}", new() { ["input_states"] = input, ["position_ids"] = positions, ["attention_mask"] = mask });
            float[] expected = layer + 1 < cfg.NumLayers ? trace.LayerInputs[layer + 1] : model.FinalNormInLastBlock ? trace.NormedHidden : trace.LastHidden;
            AssertClose(o["output_states"].AsSpan(0, n * h), expected, minCosine, $"block_{layer} output");
            AssertClose(o["k_cache"].AsSpan(0, n * kvRow), trace.Keys[layer], minCosine, $"block_{layer} k");
            AssertClose(o["v_cache"].AsSpan(0, n * kvRow), trace.Values[layer], minCosine, $"block_{layer} v");
        }

        float[] lastHidden = (model.FinalNormInLastBlock ? trace.NormedHidden : trace.LastHidden).AsSpan((n - 1) * h, h).ToArray();
        float[] head = chain.Run("lm_head", new() { ["hidden_states"] = lastHidden }).Values.Single();
        var lastLogits = logits.AsSpan((n - 1) * cfg.VocabSize, cfg.VocabSize);
        if (PieceGraphBuilder.LmHeadOutputsLogits(model)) AssertClose(head, lastLogits, minCosine, "lm_head logits");
        else Assert.AreEqual(ReferenceModelTests.ArgMax(lastLogits), (int)head[0], "lm_head token");

        // One decode step through embedding_cache and block_cache_i with the prompt's KV as history.
        int next = ReferenceModelTests.ArgMax(lastLogits);
        var step = new ReferenceTrace();
        reference.Forward([next], step);
        AssertClose(chain.Run("embedding_cache", new() { ["input_ids"] = [next] })["embedding_cache"], step.Embeddings, minCosine, "embedding_cache");
        var decodeMask = new float[s + 1];
        for (int j = n; j < s; j++) decodeMask[j] = NetContract.MaskFill;
        for (int layer = 0; layer < cfg.NumLayers; layer++)
        {
            var hk = new float[s * kvRow];
            var hv = new float[s * kvRow];
            trace.Keys[layer].CopyTo(hk, 0);
            trace.Values[layer].CopyTo(hv, 0);
            var o = chain.Run($"block_cache_{layer}", new()
            {
                ["input_states"] = step.LayerInputs[layer], ["position_ids"] = [n], ["attention_mask"] = decodeMask,
                ["history_k"] = hk, ["history_v"] = hv,
            });
            float[] expected = layer + 1 < cfg.NumLayers ? step.LayerInputs[layer + 1] : model.FinalNormInLastBlock ? step.NormedHidden : step.LastHidden;
            AssertClose(o["output_states"], expected, minCosine, $"block_cache_{layer} output");
            AssertClose(o["k_cache"], step.Keys[layer], minCosine, $"block_cache_{layer} k");
            AssertClose(o["v_cache"], step.Values[layer], minCosine, $"block_cache_{layer} v");
        }
    }

    [TestMethod]
    public void Qwen2PiecesMatchTheReference() => PerPieceAgainstReference(Tiny(), Resolve(Tiny()), 0.9999);

    [TestMethod]
    public void Qwen2PiecesWithLogitsAndUnfusedNormMatchTheReference() =>
        PerPieceAgainstReference(Tiny(), Resolve(Tiny(), o => o with { DoSample = true, NumDevice = 2 }), 0.9999);

    [TestMethod]
    public void Qwen3PiecesMatchTheReference()
    {
        var c = Synthetic("qwen3", SyntheticModels.Qwen3);
        PerPieceAgainstReference(c, Resolve(c), 0.9999);
    }

    [TestMethod]
    public void Llama3ScaledRopePiecesMatchTheReference()
    {
        var c = Synthetic("llama3", SyntheticModels.Llama3);
        PerPieceAgainstReference(c, Resolve(c, o => o with { DoSample = true }), 0.9999);
    }

    [TestMethod]
    public void Qwen3F16PiecesMatchTheReference()
    {
        var c = Synthetic("qwen3", SyntheticModels.Qwen3);
        PerPieceAgainstReference(c, Resolve(c, o => o with { Quantize = "f16" }), 0.9999);
    }

    [TestMethod]
    public void W8PiecesStayCloseToTheReference() =>
        PerPieceAgainstReference(Tiny(), Resolve(Tiny(), o => o with { Quantize = "w8bf16", QGroupSize = 32 }), 0.999);

    [TestMethod]
    public void W4PiecesStayCloseToTheReference()
    {
        var c = Synthetic("llama3", SyntheticModels.Llama3);
        PerPieceAgainstReference(c, Resolve(c, o => o with { Quantize = "w4bf16", QGroupSize = 32, DoSample = true }), 0.99);
    }

    [TestMethod]
    public void ChainedPiecesGenerateTheGoldenTokens()
    {
        // Default options: lm_head returns the top-1 id. Prefill (padded to SeqLength) then 20 decode steps.
        var c = Tiny();
        var model = TestResolver.Resolve(c.Dir, TestResolver.Options(c.Dir, 64));
        var chain = new PieceChain(model, new TestWeightSource(model, c.Checkpoint));
        int token = (int)chain.Prefill(Goldens.PromptIds)[0];
        for (int step = 0; step <= 20; step++)
        {
            Assert.AreEqual(Goldens.GeneratedIds[step], token, $"step {step}");
            if (step < 20) token = (int)chain.Decode(token)[0];
        }
    }

    [TestMethod]
    public void ChainedPiecesReproduceTheReferenceLogits()
    {
        // DoSample: lm_head returns logits; greedy_head picks the token. Compared with the reference and HF's goldens.
        var c = Tiny();
        var model = Resolve(c, o => o with { DoSample = true });
        var chain = new PieceChain(model, new TestWeightSource(model, c.Checkpoint));
        var reference = new ReferenceModel(c.Checkpoint, model.Config);
        int vocab = model.Config.VocabSize;
        float[] logits = chain.Prefill(Goldens.PromptIds);
        float[] expected = reference.Forward(Goldens.PromptIds).AsSpan((Goldens.PromptIds.Length - 1) * vocab, vocab).ToArray();
        double worst = 0;
        for (int step = 0; step <= 20; step++)
        {
            worst = Math.Max(worst, ReferenceModelTests.RelativeError(logits, expected));
            Assert.IsTrue(ReferenceModelTests.RelativeError(logits, Goldens.GeneratedLogits.AsSpan(step * vocab, vocab)) < 1e-4, $"step {step} vs HF");
            int token = (int)chain.Run("greedy_head", new() { ["m_logits"] = logits })["token_id"][0];
            Assert.AreEqual(Goldens.GeneratedIds[step], token, $"step {step}");
            if (step == 20) break;
            logits = chain.Decode(token);
            expected = reference.Forward([token]);
        }
        Assert.IsTrue(worst < 1e-4, $"worst relative logit error {worst:E2}");
    }
}
