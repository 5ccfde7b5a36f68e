using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>Every piece's inputs, outputs and weights against the net contract (DESIGN §7) for the tiny model and real configs.</summary>
[TestClass]
public sealed class ContractShapeTests
{
    private static void Expect(PieceGraph g, IEnumerable<GraphTensor> actual, (string Name, GraphDType DType, long[] Shape)[] expected, string what)
    {
        var list = actual.ToList();
        Assert.AreEqual(expected.Length, list.Count, $"{g.Name} {what}: {string.Join(", ", list)}");
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.AreEqual(expected[i].Name, list[i].Name, $"{g.Name} {what} {i}");
            Assert.AreEqual(expected[i].DType, list[i].DType, $"{g.Name} {list[i].Name}");
            CollectionAssert.AreEqual(expected[i].Shape, list[i].Shape, $"{g.Name} {list[i].Name}: [{string.Join(",", list[i].Shape)}]");
        }
    }

    [TestMethod]
    public void EveryPieceHasTheContractIo()
    {
        int checkedPieces = 0;
        foreach (var s in TestScenarios.All)
        {
            var m = s.Model;
            var o = m.Options;
            var c = m.Config;
            long h = c.HiddenSize, v = c.VocabSize, kvh = c.NumKvHeads, d = c.HeadDim, S = m.SeqLength, L = m.PrefillLength, B = o.Batch;
            const GraphDType F = GraphDType.F32, I = GraphDType.SI32;
            foreach (Piece p in TestScenarios.Pieces(s))
            {
                PieceGraph g = PieceGraphBuilder.Build(m, p);
                checkedPieces++;
                switch (p.Kind)
                {
                    case PieceKind.Embedding:
                    {
                        long len = o.SharePrompt ? Math.Max(o.MaxPrefillKvLength, L) : L;
                        Expect(g, g.InputTensors, [("input_ids", I, [1, len])], "inputs");
                        Expect(g, g.OutputTensors, [("embedding", F, [1, len, h])], "outputs");
                        break;
                    }
                    case PieceKind.EmbeddingCache:
                        Expect(g, g.InputTensors, [("input_ids", I, [B, 1])], "inputs");
                        Expect(g, g.OutputTensors, [("embedding_cache", F, [B, 1, h])], "outputs");
                        break;
                    case PieceKind.Block or PieceKind.BlockPrompt:
                    {
                        long len = p.Kind == PieceKind.BlockPrompt ? o.MaxPrefillKvLength : L;
                        var inputs = new List<(string, GraphDType, long[])> { ("input_states", F, [1, len, h]), ("position_ids", I, [1, len]) };
                        if (!o.Dynamic) inputs.Add(("attention_mask", F, [1, 1, len, len]));
                        Expect(g, g.InputTensors, inputs.ToArray(), "inputs");
                        Expect(g, g.OutputTensors, [("output_states", F, [1, len, h]), ("k_cache", F, [1, len, kvh, d]), ("v_cache", F, [1, len, kvh, d])], "outputs");
                        Assert.AreEqual(o.Dynamic, g.Dynamic);
                        Assert.AreEqual(o.Dynamic, g.Constants.Any(k => k.Key == PieceGraphBuilder.CausalMaskKey));
                        break;
                    }
                    case PieceKind.BlockKv:
                    {
                        long hist = o.MaxPrefillKvLength > 0 ? o.MaxPrefillKvLength : S;
                        Expect(g, g.InputTensors, [("input_states", F, [1, L, h]), ("position_ids", I, [1, L]), ("attention_mask", F, [1, 1, L, hist + L]),
                            ("history_k", F, [1, hist, kvh, d]), ("history_v", F, [1, hist, kvh, d])], "inputs");
                        Expect(g, g.OutputTensors, [("output_states", F, [1, L, h]), ("k_cache", F, [1, L, kvh, d]), ("v_cache", F, [1, L, kvh, d])], "outputs");
                        break;
                    }
                    case PieceKind.BlockCache:
                        Expect(g, g.InputTensors, [("input_states", F, [B, 1, h]), ("position_ids", I, [B, 1]), ("attention_mask", F, [B, 1, 1, S + 1]),
                            ("history_k", F, [B, S, kvh, d]), ("history_v", F, [B, S, kvh, d])], "inputs");
                        Expect(g, g.OutputTensors, [("output_states", F, [B, 1, h]), ("k_cache", F, [B, 1, kvh, d]), ("v_cache", F, [B, 1, kvh, d])], "outputs");
                        break;
                    case PieceKind.LmHead:
                        Expect(g, g.InputTensors, [("hidden_states", F, [B, h])], "inputs");
                        Expect(g, g.OutputTensors, o.DoSample || o.LoraMaxRank > 0 ? [("logits", F, [B, v])] : [("token_id", F, [B, 1])], "outputs");
                        Assert.AreEqual(!m.FinalNormInLastBlock, g.Weights.Any(w => w.Entry!.Role == Models.WeightRole.FinalNorm), g.Name);
                        break;
                    case PieceKind.GreedyHead:
                        Expect(g, g.InputTensors, [("m_logits", F, [1, v])], "inputs");
                        Expect(g, g.OutputTensors, [("token_id", F, [1, 1])], "outputs");
                        break;
                    case PieceKind.SampleHead:
                        Expect(g, g.InputTensors, [("m_logits", F, [1, v]), ("input_ids", I, [1, S]), ("penalty", F, [1]), ("temperature", F, [1]),
                            ("top_k", I, [1]), ("top_p", F, [1])], "inputs");
                        Expect(g, g.OutputTensors, [("probs", F, [1, 50]), ("token_idx", F, [1, 50])], "outputs");
                        break;
                    case PieceKind.EmbeddingLora or PieceKind.EmbeddingCacheLora:
                    {
                        long len = p.Kind == PieceKind.EmbeddingCacheLora ? 1 : o.SharePrompt ? Math.Max(o.MaxPrefillKvLength, L) : L;
                        Expect(g, g.InputTensors, [("input_ids", I, [1, len]), ("input_states", F, [1, len, h])], "inputs");
                        Expect(g, g.OutputTensors, [(p.Name + ".lora_add", F, [1, len, h])], "outputs");
                        Assert.IsTrue(g.Constants.All(k => k.Data.All(x => x == 0)), "LoRA weights start at zero");
                        break;
                    }
                    case PieceKind.LmHeadLora:
                        Expect(g, g.InputTensors, [("input_states", F, [1, h]), ("input_logits", F, [1, v])], "inputs");
                        Expect(g, g.OutputTensors, [("lm_head_lora.lora_add", F, [1, v])], "outputs");
                        break;
                    default:
                        Assert.Fail($"unexpected piece kind {p.Kind}");
                        break;
                }
                CheckWeights(m, g);
            }
        }
        Assert.IsTrue(checkedPieces > 120, checkedPieces.ToString());
    }

    /// <summary>Weights have the stored layout of their entries: activation/f32 values as the entry's shape, quantized as qweight/scales/qzeros.</summary>
    private static void CheckWeights(ResolvedModel m, PieceGraph g)
    {
        bool quantized = false;
        foreach (GraphWeight w in g.Weights)
        {
            Assert.IsNotNull(g.Piece.WeightOwner, g.Name);
            Assert.IsTrue(m.Owner(g.Piece.WeightOwner!).Entries.Contains(w.Entry!), $"{g.Name}: {w.Key} is not an entry of its owner");
            long n = w.Entry!.Shape[0], k = w.Entry!.Shape.Length > 1 ? w.Entry!.Shape[1] : 0;
            long groups = m.Weights.GroupSize > 0 ? k / m.Weights.GroupSize : 1;
            switch (w.Part)
            {
                case WeightPart.Value:
                    Assert.AreEqual(w.Entry!.Key, w.Key);
                    CollectionAssert.AreEqual(w.Entry!.Shape, w.Shape, w.Key);
                    Assert.AreEqual(w.Entry!.Storage == WeightStorage.Float32 ? GraphDType.F32 : GraphDTypes.Activation(m.ActivationDtype), w.DType, w.Key);
                    break;
                case WeightPart.QWeight:
                    quantized = true;
                    Assert.AreEqual(WeightKeys.QWeight(w.Entry!.Key), w.Key);
                    CollectionAssert.AreEqual(new[] { n, k * m.Weights.Bits / 8 }, w.Shape, w.Key);
                    Assert.AreEqual(GraphDType.UI8, w.DType);
                    break;
                case WeightPart.Scales:
                    Assert.AreEqual(WeightKeys.Scales(w.Entry!.Key), w.Key);
                    CollectionAssert.AreEqual(new[] { n, groups }, w.Shape, w.Key);
                    Assert.AreEqual(GraphDType.F32, w.DType);
                    break;
                case WeightPart.QZeros:
                    Assert.AreEqual(WeightKeys.QZeros(w.Entry!.Key), w.Key);
                    CollectionAssert.AreEqual(new[] { n, groups }, w.Shape, w.Key);
                    Assert.AreEqual(GraphDType.UI8, w.DType);
                    break;
            }
        }
        Assert.AreEqual(quantized ? "LLM_QUANTIZED" : "LLM", g.Platform, g.Name);
        if (g.Piece.Kind is PieceKind.Block or PieceKind.BlockCache && m.Weights.IsQuantized) Assert.IsTrue(quantized, g.Name);
    }

    [TestMethod]
    public void PieceListsFollowTheOptions()
    {
        foreach (var s in TestScenarios.All)
        {
            var o = s.Model.Options;
            var names = s.Model.Pieces.Select(p => p.Name).ToHashSet();
            int layers = s.Model.Config.NumLayers;
            Assert.AreEqual(!o.EmbeddingDisk, names.Contains("embedding"), s.Name);
            Assert.AreEqual(o.DoSample || o.LoraMaxRank > 0, names.Contains("sample_head"), s.Name);
            Assert.AreEqual(o.LoraMaxRank > 0, names.Contains("lm_head_lora"), s.Name);
            Assert.AreEqual(layers, s.Model.Pieces.Count(p => p.Kind == PieceKind.BlockCache), s.Name);
            Assert.AreEqual(o.SharePrompt ? 0 : layers, s.Model.Pieces.Count(p => p.Kind == PieceKind.Block), s.Name);
            Assert.AreEqual(o.UseHistoryKv || o.SharePrompt ? layers : 0, s.Model.Pieces.Count(p => p.Kind == PieceKind.BlockKv), s.Name);
        }
    }

    [TestMethod]
    public void TiedModelsReadTheLmHeadFromTheEmbeddingTensor()
    {
        var qwen3 = TestScenarios.All.Single(s => s.Name == "qwen3-4b").Model;
        PieceGraph head = PieceGraphBuilder.Build(qwen3, qwen3.Piece("lm_head"));
        GraphWeight w = head.Weights.Single(x => x.Entry!.Role == Models.WeightRole.LmHead);
        Assert.AreEqual("lm_head.weight", w.Key);
        Assert.AreEqual("model.embed_tokens.weight", w.Entry!.SourceTensor);
        var qwen25 = TestScenarios.All.Single(s => s.Name == "qwen2.5-7b-instruct").Model;
        Assert.AreEqual("lm_head.weight", PieceGraphBuilder.Build(qwen25, qwen25.Piece("lm_head")).Weights.Single().Entry!.SourceTensor);
    }

    [TestMethod]
    public void FamilyDifferencesShowInTheBlocks()
    {
        PieceGraph Block(string scenario) { var m = TestScenarios.All.Single(s => s.Name == scenario).Model; return PieceGraphBuilder.Build(m, m.Piece("block_0")); }
        var qwen2 = Block("qwen2.5-7b-instruct");
        var qwen3 = Block("qwen3-4b");
        var llama = Block("llama3.2-3b-instruct");
        Assert.IsTrue(qwen2.Weights.Any(w => w.Key.EndsWith("q_proj.bias", StringComparison.Ordinal)));
        Assert.IsFalse(qwen3.Weights.Any(w => w.Key.EndsWith(".bias", StringComparison.Ordinal)));
        Assert.AreEqual(2, qwen3.Ops.Count(o => o.Kind == "top.RMSNorm" && (o.Outputs[0].EndsWith("q_norm", StringComparison.Ordinal) || o.Outputs[0].EndsWith("k_norm", StringComparison.Ordinal))));
        Assert.IsFalse(llama.Ops.Any(o => o.Outputs[0].EndsWith("q_norm", StringComparison.Ordinal)));
        // llama3 rope scaling changes the low frequencies of the cos table; qwen's tables are plain.
        var cos = llama.Constants.Single(c => c.Key == PieceGraphBuilder.RotaryCosKey);
        var cfg = TestScenarios.All.Single(s => s.Name == "llama3.2-3b-instruct").Model.Config;
        double[] inv = RotaryTables.InverseFrequencies(cfg);
        double plain = 1.0 / Math.Pow(cfg.RopeTheta, 2.0 * (inv.Length - 1) / cfg.HeadDim);
        Assert.AreEqual(plain / 32, inv[^1], plain * 1e-9, "the lowest frequency is divided by the factor");
        Assert.AreEqual(1.0, inv[0], 1e-12, "the highest frequency is kept");
        Assert.AreEqual((float)Math.Cos(100 * inv[^1]), cos.Data[100 * cfg.HeadDim + cfg.HeadDim / 2 - 1], 1e-6);
    }
}
