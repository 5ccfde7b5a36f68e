using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Graph;

/// <summary>
/// Builds the graph of one piece of the net contract (DESIGN §7) in TPU-MLIR's top dialect, for the llama, qwen2 and
/// qwen3 families. The same graph feeds the MLIR writer, the interpreter and the codegen.
/// Activations are f32 (TPU-MLIR's TOP_F32 state; the deploy step lowers them); weights keep their stored dtype.
/// </summary>
public static partial class PieceGraphBuilder
{
    /// <summary>sample_head: the largest top-k the net supports and the tokens top-p always keeps (as TPU-MLIR).</summary>
    public const int SampleMaxTopK = 50;
    public const int SampleMinTokensToKeep = 5;

    public const string RotaryCosKey = "rotary_cos.weight";
    public const string RotarySinKey = "rotary_sin.weight";
    public const string CausalMaskKey = "causal_mask.weight";
    /// <summary>The RoPE tables of sliding-window layers with their own base (gemma3's rope_local_base_freq).</summary>
    public const string RotaryLocalCosKey = "rotary_local_cos.weight";
    public const string RotaryLocalSinKey = "rotary_local_sin.weight";

    public static PieceGraph Build(ResolvedModel model, Piece piece)
    {
        var ctx = new Context(model, piece);
        return piece.Kind switch
        {
            PieceKind.Embedding => Embedding(ctx, EmbeddingLength(model)),
            PieceKind.EmbeddingCache => Embedding(ctx, 1),
            PieceKind.Block => Block(ctx),
            PieceKind.BlockPrompt => Block(ctx),
            PieceKind.BlockKv => Block(ctx),
            PieceKind.BlockCache => Block(ctx),
            PieceKind.LmHead => LmHead(ctx),
            PieceKind.GreedyHead => GreedyHead(ctx),
            PieceKind.SampleHead => SampleHead(ctx),
            PieceKind.EmbeddingLora => EmbeddingLora(ctx, EmbeddingLength(model)),
            PieceKind.EmbeddingCacheLora => EmbeddingLora(ctx, 1),
            PieceKind.LmHeadLora => LmHeadLora(ctx),
            PieceKind.Vit => Vit(ctx),
            _ => throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {piece.Name}: kind {piece.Kind} has no graph builder."),
        };
    }

    /// <summary>Prefill embedding length: MaxInputLength (or SeqLength), at least the shared prompt with SharePrompt.</summary>
    public static int EmbeddingLength(ResolvedModel model) =>
        model.Options.SharePrompt ? Math.Max(model.Options.MaxPrefillKvLength, model.PrefillLength) : model.PrefillLength;

    /// <summary>History rows a block_kv piece attends to: the shared prompt, MaxPrefillKvLength, or SeqLength.</summary>
    public static int HistoryLength(ResolvedModel model) =>
        model.Options.MaxPrefillKvLength > 0 ? model.Options.MaxPrefillKvLength : model.SeqLength;

    /// <summary>True for models whose logits leave lm_head (DoSample or LoRA) and go through greedy/sample heads.</summary>
    public static bool LmHeadOutputsLogits(ResolvedModel model) => model.Options.DoSample || model.Options.LoraMaxRank > 0;

    /// <summary>Batch of the decode nets (embedding_cache, block_cache, lm_head); prefill nets are batch 1.</summary>
    public static int DecodeBatch(ResolvedModel model) => model.Options.Batch;

    private sealed class Context
    {
        public Context(ResolvedModel model, Piece piece)
        {
            Model = model;
            Piece = piece;
            Config = model.Config;
            G = new GraphAssembler(piece);
            Activation = GraphDTypes.Activation(model.ActivationDtype);
            Owner = piece.WeightOwner is null ? null : model.Owner(piece.WeightOwner);
        }

        public ResolvedModel Model { get; }
        public Piece Piece { get; }
        public ModelConfig Config { get; }
        public GraphAssembler G { get; }
        public GraphDType Activation { get; }
        public WeightOwner? Owner { get; }
        public bool AnyQuantized { get; set; }

        public string Platform => AnyQuantized ? "LLM_QUANTIZED" : "LLM";

        public WeightEntry? Find(WeightRole role, int layer) =>
            Owner?.Entries.FirstOrDefault(e => e.Role == role && (!ModelFamily.IsLayerRole(role) || e.Layer == layer));

        public WeightEntry Need(WeightRole role, int layer = 0) => Find(role, layer)
            ?? throw new LlmBuildException(ErrorCodes.GraphMissingWeight,
                $"Piece {Piece.Name}: weight owner '{Piece.WeightOwner ?? "(none)"}' has no {role}{(ModelFamily.IsLayerRole(role) ? $" of layer {layer}" : "")}. " +
                "The resolved model is stale or inconsistent; rebuild.");

        /// <summary>Declares a non-linear weight (norm, bias, embedding) after checking its shape.</summary>
        public string Plain(WeightEntry e, params long[] expected)
        {
            CheckShape(e, expected);
            if (e.Storage == WeightStorage.Quantized)
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Weight '{e.Key}' ({e.Role}) is quantized, but only linear layers may be.");
            return G.Weight(e, WeightPart.Value, e.Key, StoredType(e), e.Shape);
        }

        /// <summary>Declares elements [start, start + count) of a 1-D non-linear weight (a column-parallel bias).</summary>
        public string PlainSlice(WeightEntry e, long length, long start, long count)
        {
            CheckShape(e, [length]);
            if (e.Storage == WeightStorage.Quantized)
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Weight '{e.Key}' ({e.Role}) is quantized, but only linear layers may be.");
            return G.Weight(e, WeightPart.Value, e.Key, StoredType(e), e.Shape, new WeightSlice(0, start, count, e.Shape));
        }

        public GraphDType StoredType(WeightEntry e) => e.Storage == WeightStorage.Float32 ? GraphDType.F32 : Activation;

        public void CheckShape(WeightEntry e, long[] expected)
        {
            if (!e.Shape.SequenceEqual(expected))
                throw new LlmBuildException(ErrorCodes.GraphBadShape,
                    $"Weight '{e.Key}' ({e.Role}) has shape [{string.Join(",", e.Shape)}] but the model's config.json implies [{string.Join(",", expected)}].");
        }
    }

    private static string Stem(string key) => key.EndsWith(".weight", StringComparison.Ordinal) ? key[..^".weight".Length] : key;

    // ---------------------------------------------------------------- embedding

    private static PieceGraph Embedding(Context c, int length)
    {
        int batch = c.Piece.Kind == PieceKind.EmbeddingCache ? DecodeBatch(c.Model) : 1;
        var g = c.G;
        string ids = g.Input("input_ids", GraphDType.SI32, batch, length);
        WeightEntry e = c.Need(WeightRole.Embedding);
        string table = c.Plain(e, c.Config.VocabSize, c.Config.HiddenSize);
        long[] shape = [batch, length, c.Config.HiddenSize];
        string output = g.Op("top.Gather", [table, ids], c.Config.EmbeddingMultiplier == 1 ? c.Piece.Name : c.Piece.Name + ".gather", shape, OpAttr.SI32("axis", 0));
        if (c.Config.EmbeddingMultiplier != 1)
            output = g.Op("top.MulConst", [output], c.Piece.Name, shape, OpAttr.F64("const_val", c.Config.EmbeddingMultiplier));
        return g.Build(c.Platform, false, output);
    }

    private static PieceGraph EmbeddingLora(Context c, int length)
    {
        var g = c.G;
        int rank = c.Model.Options.LoraMaxRank;
        int hidden = c.Config.HiddenSize;
        string stem = Stem(c.Model.ModelFamily.TensorName(WeightRole.Embedding));
        string ids = g.Input("input_ids", GraphDType.SI32, 1, length);
        string states = g.Input("input_states", GraphDType.F32, 1, length, hidden);
        string a = g.Constant(stem + ".lora_A.weight", c.Activation, [c.Config.VocabSize, rank], new float[(long)c.Config.VocabSize * rank]);
        string b = g.Constant(stem + ".lora_B.weight", c.Activation, [rank, hidden], new float[rank * hidden]);
        string name = c.Piece.Name;
        string ga = g.Op("top.Gather", [a, ids], name + ".lora_A", [1, length, rank], OpAttr.SI32("axis", 0));
        string mb = g.Op("top.MatMul", [ga, b, ""], name + ".lora_B", [1, length, hidden], OpAttr.Of("do_relu", false));
        string sum = g.Op("top.Add", [states, mb], name + ".lora_add", [1, length, hidden]);
        return g.Build(c.Platform, false, sum);
    }

    // ---------------------------------------------------------------- heads

    private static PieceGraph LmHead(Context c)
    {
        var g = c.G;
        int batch = DecodeBatch(c.Model);
        int hidden = c.Config.HiddenSize, vocab = c.Config.VocabSize;
        string x = g.Input("hidden_states", GraphDType.F32, batch, hidden);
        if (!c.Model.FinalNormInLastBlock)
        {
            WeightEntry norm = c.Need(WeightRole.FinalNorm);
            string gamma = c.Plain(norm, hidden);
            x = g.Op("top.RMSNorm", [x, gamma], Stem(norm.Key), [batch, hidden], OpAttr.F64("eps", c.Config.RmsNormEps));
            if (c.Config.FinalHiddenMultiplier != 1)
                x = g.Op("top.MulConst", [x], Stem(norm.Key) + ".scale", [batch, hidden], OpAttr.F64("const_val", c.Config.FinalHiddenMultiplier));
        }
        WeightEntry head = c.Need(WeightRole.LmHead);
        double cap = c.Config.FinalLogitSoftcap;
        string logits = Linear(c, head, null, x, cap > 0 ? "logits_uncapped" : "logits", [batch, vocab], hidden, vocab);
        if (cap > 0) logits = SoftCap(g, logits, cap, "logits", [batch, vocab]);
        if (LmHeadOutputsLogits(c.Model)) return g.Build(c.Platform, false, logits);
        string[] top = g.Op("top.TopK", [logits],
            [("token_value", GraphDType.F32, [batch, 1]), ("token_id", GraphDType.F32, [batch, 1])],
            OpAttr.I64("axis", 1), OpAttr.I64("K", 1));
        return g.Build(c.Platform, false, top[1]);
    }

    private static PieceGraph LmHeadLora(Context c)
    {
        var g = c.G;
        int rank = c.Model.Options.LoraMaxRank;
        int hidden = c.Config.HiddenSize, vocab = c.Config.VocabSize;
        string stem = Stem(c.Model.ModelFamily.TensorName(WeightRole.LmHead));
        string x = g.Input("input_states", GraphDType.F32, 1, hidden);
        string logits = g.Input("input_logits", GraphDType.F32, 1, vocab);
        string a = g.Constant(stem + ".lora_A.weight", c.Activation, [rank, hidden], new float[rank * hidden]);
        string b = g.Constant(stem + ".lora_B.weight", c.Activation, [rank, vocab], new float[(long)rank * vocab]);
        string ma = g.Op("top.MatMul", [x, a, ""], "lm_head_lora.lora_A", [1, rank], OpAttr.Of("right_transpose", true), OpAttr.Of("do_relu", false));
        string mb = g.Op("top.MatMul", [ma, b, ""], "lm_head_lora.lora_B", [1, vocab], OpAttr.Of("do_relu", false));
        string sum = g.Op("top.Add", [logits, mb], "lm_head_lora.lora_add", [1, vocab]);
        return g.Build(c.Platform, false, sum);
    }

    private static PieceGraph GreedyHead(Context c)
    {
        var g = c.G;
        string logits = g.Input("m_logits", GraphDType.F32, 1, c.Config.VocabSize);
        string[] top = g.Op("top.TopK", [logits],
            [("token_value", GraphDType.F32, [1, 1]), ("token_id", GraphDType.F32, [1, 1])],
            OpAttr.I64("axis", 1), OpAttr.I64("K", 1));
        return g.Build(c.Platform, false, top[1]);
    }

    /// <summary>
    /// Repetition penalty over the recent ids, temperature, top-k (≤ 50) and top-p (keeping at least 5 tokens), the
    /// same network TPU-MLIR builds. Outputs the probabilities of the top-k candidates and their token ids.
    /// </summary>
    private static PieceGraph SampleHead(Context c)
    {
        var g = c.G;
        int vocab = c.Config.VocabSize, seq = c.Model.SeqLength, k = SampleMaxTopK, keep = SampleMinTokensToKeep;
        string logits = g.Input("m_logits", GraphDType.F32, 1, vocab);
        string ids = g.Input("input_ids", GraphDType.SI32, 1, seq);
        string penalty = g.Input("penalty", GraphDType.F32, 1);
        string temperature = g.Input("temperature", GraphDType.F32, 1);
        string topK = g.Input("top_k", GraphDType.SI32, 1);
        string topP = g.Input("top_p", GraphDType.F32, 1);

        var axisData = new float[] { 1f };
        var keepIndices = new float[keep * 2];
        for (int i = 0; i < keep; i++) keepIndices[2 * i + 1] = i;
        string axisConst = g.Constant("sample_head.cumsum_axis", GraphDType.F32, [1], axisData);
        string keepIdx = g.Constant("sample_head.keep_indices", GraphDType.F32, [1, keep, 2], keepIndices);
        string keepVal = g.Constant("sample_head.keep_values", GraphDType.F32, [1, keep], Enumerable.Repeat(1f, keep).ToArray());

        string seen = g.Op("top.GatherElements", [logits, ids], "sample_head.seen_logits", [1, seq], OpAttr.I64("axis", 1));
        string negative = g.Op("top.CompareConst", [seen], "sample_head.seen_negative", [1, seq],
            OpAttr.String("mode", "Less"), OpAttr.F64("const_val", 0), OpAttr.Of("inversed", false));
        string times = g.Op("top.Mul", [seen, penalty], "sample_head.seen_mul", [1, seq]);
        string divided = g.Op("top.Div", [seen, penalty], "sample_head.seen_div", [1, seq]);
        string penalized = g.Op("top.Where", [negative, times, divided], "sample_head.seen_penalized", [1, seq]);
        string scattered = g.Op("top.ScatterElements", [logits, ids, penalized], "sample_head.penalized_logits", [1, vocab],
            OpAttr.I64("axis", 1));
        string[] top = g.Op("top.TopK", [scattered, topK],
            [("sample_head.topk_values", GraphDType.F32, [1, k]), ("token_idx", GraphDType.F32, [1, k])],
            OpAttr.I64("axis", 1), OpAttr.I64("K", k));
        string tempered = g.Op("top.Div", [top[0], temperature], "sample_head.tempered", [1, k]);
        string soft = g.Op("top.Softmax", [tempered], "sample_head.softmax0", [1, k], OpAttr.SI32("axis", 1));
        string cumsum = g.Op("top.CumSum", [soft, axisConst], "sample_head.cumsum", [1, k], OpAttr.I64("axis", 1));
        string within = g.Op("top.Compare", [cumsum, topP], "sample_head.within_top_p", [1, k], OpAttr.String("mode", "Less"));
        string kept = g.Op("top.ScatterND", [within, keepIdx, keepVal], "sample_head.kept", [1, k], OpAttr.I32("reduction", 0));
        string filtered = g.Op("top.Where", [kept, tempered, ""], "sample_head.filtered", [1, k],
            OpAttr.Of("y_is_const", true), OpAttr.F64("y_const_val", -1000));
        string probs = g.Op("top.Softmax", [filtered], "probs", [1, k], OpAttr.SI32("axis", 1));
        return g.Build(c.Platform, false, probs, top[1]);
    }

    // ---------------------------------------------------------------- blocks

    /// <summary>A block piece's lengths and the model's dimensions.</summary>
    private sealed record BlockDims(int Layer, bool Dynamic, bool WithHistory, int Batch, int Len, int History,
        long Hidden, long Heads, long KvHeads, long HeadDim, long Inter)
    {
        public int Keys => History + Len;
        public long[] States => [Batch, Len, Hidden];
    }

    /// <summary>What one device computes of a block: all of it (one device) or its share of heads and MLP columns.</summary>
    private readonly record struct Part(int Device, int Devices)
    {
        public static Part Whole => new(0, 1);
        public bool IsWhole => Devices == 1;
        public (long Start, long Count) Of(long total) => TensorParallel.Range(total, Device, Devices);
        public long Share(long total) => total / Devices;
    }

    private static BlockDims BlockSetup(Context c)
    {
        var model = c.Model;
        var cfg = c.Config;
        int layer = c.Piece.Layer;
        if (cfg.HiddenAct is not ("silu" or "gelu_pytorch_tanh"))
            throw new LlmBuildException(ErrorCodes.GraphUnsupported,
                $"hidden_act '{cfg.HiddenAct}' is not supported by the block builder (supported: silu, gelu_pytorch_tanh).");
        if (cfg.AttentionSoftcap > 0 && model.Options.Dynamic)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                $"attn_logit_softcapping {cfg.AttentionSoftcap}: soft-capped attention is built from its parts and needs the attention mask input; set Dynamic=false.");
        if (layer < 0 || layer >= cfg.NumLayers)
            throw new LlmBuildException(ErrorCodes.GraphBadShape, $"Piece {c.Piece.Name}: layer {layer} is outside 0..{cfg.NumLayers - 1}.");

        PieceKind kind = c.Piece.Kind;
        bool decode = kind == PieceKind.BlockCache;
        bool withHistory = kind is PieceKind.BlockCache or PieceKind.BlockKv;
        bool dynamic = model.Options.Dynamic && kind is PieceKind.Block or PieceKind.BlockPrompt;
        int batch = decode ? DecodeBatch(model) : 1;
        int len = kind switch
        {
            PieceKind.BlockCache => 1,
            PieceKind.BlockPrompt => model.Options.MaxPrefillKvLength,
            _ => model.PrefillLength,
        };
        int history = kind switch
        {
            PieceKind.BlockCache => c.Piece.History ?? model.SeqLength,
            PieceKind.BlockKv => HistoryLength(model),
            _ => 0,
        };
        if (len <= 0)
            throw new LlmBuildException(ErrorCodes.GraphBadShape, $"Piece {c.Piece.Name}: input length {len} is not positive (check MaxPrefillKvLength).");
        return new BlockDims(layer, dynamic, withHistory, batch, len, history, cfg.HiddenSize, cfg.NumHeads, cfg.NumKvHeads, cfg.HeadDim, cfg.IntermediateSize);
    }

    private static PieceGraph Block(Context c)
    {
        BlockDims b = BlockSetup(c);
        var g = c.G;
        var (x, pos, mask, historyK, historyV) = BlockInputs(c, b, Part.Whole);
        var (attn, k, v) = Attention(c, b, Part.Whole, x, pos, mask, historyK, historyV);
        WeightEntry oW = c.Need(WeightRole.OProj, b.Layer);
        string o = ResidualBranch(c, OutputNorm(c, WeightRole.AttentionOutputNorm, b,
            Linear(c, oW, c.Find(WeightRole.OBias, b.Layer), attn, null, b.States, b.Heads * b.HeadDim, b.Hidden)), b.States);
        string res = g.Op("top.Add", [x, o], Stem(oW.Key) + ".add", b.States);
        string down = Mlp(c, b, Part.Whole, res, null);
        string output = BlockOutput(c, b, res, [down]);
        return g.Build(c.Platform, b.Dynamic, output, k, v);
    }

    /// <summary>
    /// One sub-net of a tensor-parallel block (<see cref="TensorParallel"/>): step 0 attention of the device's heads
    /// with its share of o_proj, step 1 the all-reduced residual and the device's MLP columns, step 2 the reduced
    /// output. The graph reads the device's slices of the unsplit piece's weights.
    /// </summary>
    public static PieceGraph BuildShard(ResolvedModel model, Piece piece, int step, int device)
    {
        if (!TensorParallel.IsBlock(piece.Kind))
            throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {piece.Name} ({piece.Kind}) is not a block; only blocks are split across devices.");
        int devices = TensorParallel.Devices(model);
        if (step is < 0 or >= TensorParallel.Steps) throw new ArgumentOutOfRangeException(nameof(step), step, $"steps are 0..{TensorParallel.Steps - 1}");
        if (device < 0 || device >= devices) throw new ArgumentOutOfRangeException(nameof(device), device, $"devices are 0..{devices - 1}");
        var c = new Context(model, piece);
        var part = new Part(device, devices);
        var shard = new GraphShard(step, device, devices);
        BlockDims b = BlockSetup(c);
        var g = c.G;
        WeightEntry oW = c.Need(WeightRole.OProj, b.Layer);
        if (c.Find(WeightRole.AttentionOutputNorm, b.Layer) is not null)
            throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {piece.Name}: a norm on the attention output cannot be split across devices; use NumDevice=1.");
        switch (step)
        {
            case 0:
            {
                var (x, pos, mask, historyK, historyV) = BlockInputs(c, b, part);
                var (attn, k, v) = Attention(c, b, part, x, pos, mask, historyK, historyV);
                if (c.Config.ResidualMultiplier != 1 && c.Find(WeightRole.OBias, b.Layer) is not null)
                    throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {piece.Name}: a scaled residual branch with an o_proj bias cannot be split across devices.");
                string partial = ResidualBranch(c, Linear(c, oW, null, attn, c.Config.ResidualMultiplier == 1 ? TensorParallel.AttnPartial(device) : null,
                    b.States, b.Heads * b.HeadDim, b.Hidden, part), b.States, TensorParallel.AttnPartial(device));
                return g.Build(c.Platform, b.Dynamic, shard, partial, k, v);
            }
            case 1:
            {
                string x = g.Input("input_states", GraphDType.F32, b.States);
                var addends = Enumerable.Range(0, devices).Select(j => g.Input(TensorParallel.AttnPartial(j), GraphDType.F32, b.States)).ToList();
                // The row-parallel o_proj's bias is added once, after the partial sums.
                if (c.Find(WeightRole.OBias, b.Layer) is { } oBias) addends.Add(c.Plain(oBias, b.Hidden));
                string res = Sum(g, x, addends, Stem(oW.Key), TensorParallel.Residual(device), b.States);
                string partial = Mlp(c, b, part, res, TensorParallel.MlpPartial(device));
                return g.Build(c.Platform, b.Dynamic, shard, res, partial);
            }
            default:
            {
                string res = g.Input(TensorParallel.Residual(device), GraphDType.F32, b.States);
                var partials = Enumerable.Range(0, devices).Select(j => g.Input(TensorParallel.MlpPartial(j), GraphDType.F32, b.States)).ToList();
                // The row-parallel down_proj's bias is added once, after the partial sums.
                if (c.Find(WeightRole.MlpDownBias, b.Layer) is { } downBias)
                {
                    if (c.Config.ResidualMultiplier != 1)
                        throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {piece.Name}: a scaled residual branch with a down_proj bias cannot be split across devices.");
                    partials.Add(c.Plain(downBias, b.Hidden));
                }
                string output = BlockOutput(c, b, res, partials);
                return g.Build(c.Platform, b.Dynamic, shard, output);
            }
        }
    }

    /// <summary>The block's inputs in contract order; the history holds the part's kv heads.</summary>
    private static (string X, string Pos, string? Mask, string? HistoryK, string? HistoryV) BlockInputs(Context c, BlockDims b, Part part)
    {
        var g = c.G;
        long kvh = part.Share(b.KvHeads);
        string x = g.Input("input_states", GraphDType.F32, b.States);
        // M-RoPE families take the 3-component positions [3, L] (temporal, height, width); their nets are batch 1.
        string pos = c.Config.MropeSection is null ? g.Input("position_ids", GraphDType.SI32, b.Batch, b.Len)
            : b.Batch == 1 ? g.Input("position_ids", GraphDType.SI32, 3, b.Len)
            : throw new LlmBuildException(ErrorCodes.VisionUnsupportedOption, $"Piece {c.Piece.Name}: M-RoPE blocks are built for Batch=1.");
        string? mask = b.Dynamic ? null : g.Input("attention_mask", GraphDType.F32, b.Batch, 1, b.Len, b.Keys);
        string? historyK = b.WithHistory ? g.Input("history_k", GraphDType.F32, b.Batch, b.History, kvh, b.HeadDim) : null;
        string? historyV = b.WithHistory ? g.Input("history_v", GraphDType.F32, b.Batch, b.History, kvh, b.HeadDim) : null;
        return (x, pos, mask, historyK, historyV);
    }

    /// <summary>Input norm, q/k/v of the part's heads, q/k norms, RoPE and attention: returns [B, L, heads·d] and the new k, v.</summary>
    private static (string Attn, string K, string V) Attention(Context c, BlockDims b, Part part, string x, string pos, string? mask,
        string? historyK, string? historyV)
    {
        var model = c.Model;
        var cfg = c.Config;
        var g = c.G;
        int layer = b.Layer, batch = b.Batch, len = b.Len, keys = b.Keys;
        long h = b.Hidden, d = b.HeadDim;
        long nh = part.Share(b.Heads), kvh = part.Share(b.KvHeads), qd = nh * d, kvd = kvh * d;
        long qdAll = b.Heads * d, kvdAll = b.KvHeads * d;

        WeightEntry inNorm = c.Need(WeightRole.InputNorm, layer);
        string ln = g.Op("top.RMSNorm", [x, c.Plain(inNorm, h)], Stem(inNorm.Key), [batch, len, h], OpAttr.F64("eps", cfg.RmsNormEps));
        string q = Linear(c, c.Need(WeightRole.QProj, layer), c.Find(WeightRole.QBias, layer), ln, null, [batch, len, qd], h, qdAll, part);
        string k = Linear(c, c.Need(WeightRole.KProj, layer), c.Find(WeightRole.KBias, layer), ln, null, [batch, len, kvd], h, kvdAll, part);
        string v = Linear(c, c.Need(WeightRole.VProj, layer), c.Find(WeightRole.VBias, layer), ln, null, [batch, len, kvd], h, kvdAll, part);
        q = g.Op("top.Reshape", [q], q + ".reshape", [batch, len, nh, d], OpAttr.I64s("shape", batch, len, nh, d));
        k = g.Op("top.Reshape", [k], k + ".reshape", [batch, len, kvh, d], OpAttr.I64s("shape", batch, len, kvh, d));
        v = g.Op("top.Reshape", [v], "v_cache", [batch, len, kvh, d], OpAttr.I64s("shape", batch, len, kvh, d));
        if (c.Find(WeightRole.QNorm, layer) is { } qNorm)
        {
            WeightEntry kNorm = c.Need(WeightRole.KNorm, layer);
            q = g.Op("top.RMSNorm", [q, c.Plain(qNorm, d)], Stem(qNorm.Key), [batch, len, nh, d], OpAttr.F64("eps", cfg.RmsNormEps));
            k = g.Op("top.RMSNorm", [k, c.Plain(kNorm, d)], Stem(kNorm.Key), [batch, len, kvh, d], OpAttr.F64("eps", cfg.RmsNormEps));
        }
        bool local = cfg.UsesLocalRope(layer);
        var (cosTable, sinTable) = RotaryTables.Compute(local ? RotaryTables.LocalConfig(cfg) : cfg, model.SeqLength);
        string cosW = g.Constant(local ? RotaryLocalCosKey : RotaryCosKey, GraphDType.F32, [model.SeqLength, 1, d], cosTable);
        string sinW = g.Constant(local ? RotaryLocalSinKey : RotarySinKey, GraphDType.F32, [model.SeqLength, 1, d], sinTable);
        string cos = cfg.MropeSection is null ? g.Op("top.Gather", [cosW, pos], "rotary_cos", [batch, len, 1, d], OpAttr.SI32("axis", 0))
            : MropeTable(c, cosW, pos, len, d, "rotary_cos");
        string sin = cfg.MropeSection is null ? g.Op("top.Gather", [sinW, pos], "rotary_sin", [batch, len, 1, d], OpAttr.SI32("axis", 0))
            : MropeTable(c, sinW, pos, len, d, "rotary_sin");
        string attnPrefix = $"model.layers.{layer}.self_attn.";
        q = RotateHalf(g, q, cos, sin, attnPrefix + "q_rope");
        k = RotateHalf(g, k, cos, sin, "k_cache");

        string keysAll = k, valuesAll = v;
        if (b.WithHistory)
        {
            keysAll = g.Op("top.Concat", [historyK!, k], attnPrefix + "k_concat", [batch, keys, kvh, d], OpAttr.SI32("axis", 1));
            valuesAll = g.Op("top.Concat", [historyV!, v], attnPrefix + "v_concat", [batch, keys, kvh, d], OpAttr.SI32("axis", 1));
        }
        var faAttrs = new List<OpAttr>
        {
            OpAttr.F64("scale", cfg.ScoreScale), OpAttr.I64("batch", batch), OpAttr.I64("q_head", nh), OpAttr.I64("kv_head", kvh),
            OpAttr.I64("dim", d), OpAttr.I64("mq", len), OpAttr.I64("mk", keys),
        };
        int window = cfg.WindowOf(layer);
        if (window > 0 && window < model.SeqLength)
        {
            if (mask is null)
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {c.Piece.Name}: the sliding window needs the attention mask input (Dynamic=false).");
            if (cfg.MropeSection is not null)
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {c.Piece.Name}: a sliding window with M-RoPE positions is not supported; set use_sliding_window false or SeqLength ≤ the window.");
            mask = WindowMask(c, b, pos, mask, window, attnPrefix);
        }
        if (b.Dynamic)
        {
            // The prefill length varies at run time, so the net takes no mask: a small static causal mask weight marks
            // the attention as causal (TPU-MLIR's FAttention mask_size ≠ 0: key j is visible to query i iff j ≤ i + mk − mq).
            mask = g.Constant(CausalMaskKey, GraphDType.F32, [1, 1, 2, 2], [0f, NetContract.MaskFill, 0f, 0f]);
            faAttrs.Add(OpAttr.I64("mask_size", 4));
        }
        string attn = cfg.AttentionSoftcap > 0
            ? SoftcappedAttention(c, b, q, keysAll, valuesAll, mask!, nh, kvh, attnPrefix)
            : g.Op("top.FAttention", [q, keysAll, valuesAll, mask!, ""], attnPrefix + "fattention", [batch, len, qd], faAttrs.ToArray());
        return (attn, k, v);
    }

    /// <summary>
    /// Attention with tanh soft-capped scores (gemma2), built from its parts because top.FAttention has no soft-cap:
    /// q → [B,H,L,D]; k, v repeated over each kv head's query group → [B,H,D,Keys] and [B,H,Keys,D]; scores = q·k
    /// (batched top.MatMul) · scale, then cap · tanh(scores / cap), plus the mask, softmax over the keys, times v, back to
    /// [B, L, H·D].
    /// </summary>
    private static string SoftcappedAttention(Context c, BlockDims b, string q, string keys, string values, string mask, long heads, long kvHeads, string prefix)
    {
        var g = c.G;
        long batch = b.Batch, len = b.Len, keyCount = b.Keys, d = b.HeadDim, group = heads / kvHeads;
        double cap = c.Config.AttentionSoftcap, scale = c.Config.ScoreScale;
        string Repeat(string x, string name)
        {
            if (group == 1) return x;
            string split = g.Op("top.Reshape", [x], name + ".split", [batch, keyCount, kvHeads, 1, d], OpAttr.I64s("shape", batch, keyCount, kvHeads, 1, d));
            string copies = g.Op("top.Concat", Enumerable.Repeat(split, (int)group).ToArray(), name + ".repeat", [batch, keyCount, kvHeads, group, d], OpAttr.SI32("axis", 3));
            return g.Op("top.Reshape", [copies], name + ".heads", [batch, keyCount, heads, d], OpAttr.I64s("shape", batch, keyCount, heads, d));
        }
        string qT = g.Op("top.Permute", [q], prefix + "q_t", [batch, heads, len, d], OpAttr.I64s("order", 0, 2, 1, 3));
        string kT = g.Op("top.Permute", [Repeat(keys, prefix + "k")], prefix + "k_t", [batch, heads, d, keyCount], OpAttr.I64s("order", 0, 2, 3, 1));
        string vT = g.Op("top.Permute", [Repeat(values, prefix + "v")], prefix + "v_t", [batch, heads, keyCount, d], OpAttr.I64s("order", 0, 2, 1, 3));
        long[] scoreShape = [batch, heads, len, keyCount];
        string scores = g.Op("top.MatMul", [qT, kT, ""], prefix + "scores", scoreShape, OpAttr.Of("do_relu", false));
        string scaled = g.Op("top.MulConst", [scores], prefix + "scores_scaled", scoreShape, OpAttr.F64("const_val", scale));
        string capped = SoftCap(g, scaled, cap, prefix + "scores_capped", scoreShape);
        string masked = g.Op("top.Add", [capped, mask], prefix + "scores_masked", scoreShape);
        string probs = g.Op("top.Softmax", [masked], prefix + "probs", scoreShape, OpAttr.SI32("axis", 3));
        string context = g.Op("top.MatMul", [probs, vT, ""], prefix + "context", [batch, heads, len, d], OpAttr.Of("do_relu", false));
        string back = g.Op("top.Permute", [context], prefix + "context_t", [batch, len, heads, d], OpAttr.I64s("order", 0, 2, 1, 3));
        return g.Op("top.Reshape", [back], prefix + "fattention", [batch, len, heads * d], OpAttr.I64s("shape", batch, len, heads * d));
    }

    /// <summary>
    /// The attention mask with a sliding window: key j (at position k_j) stays visible to the query at position p only when
    /// p − k_j &lt; window. Query positions come from position_ids (gathered from a float position table); keys are the
    /// history rows (row j holds position j) followed by the new tokens. Adds MaskFill where the window hides a key.
    /// </summary>
    private static string WindowMask(Context c, BlockDims b, string pos, string mask, int window, string prefix)
    {
        var g = c.G;
        int seq = c.Model.SeqLength;
        var positions = new float[seq];
        for (int i = 0; i < seq; i++) positions[i] = i;
        string table = g.Constant($"window_positions.weight", GraphDType.F32, [seq], positions);
        string queryPos = g.Op("top.Gather", [table, pos], prefix + "window_qpos", [b.Batch, b.Len], OpAttr.SI32("axis", 0));
        string keyPos = queryPos;
        if (b.WithHistory)
        {
            var history = new float[(long)b.Batch * b.History];
            for (int r = 0; r < b.Batch; r++) for (int j = 0; j < b.History; j++) history[r * b.History + j] = j;
            string historyPos = g.Constant($"window_history_positions_{b.Batch}x{b.History}.weight", GraphDType.F32, [b.Batch, b.History], history);
            keyPos = g.Op("top.Concat", [historyPos, queryPos], prefix + "window_kpos", [b.Batch, b.Keys], OpAttr.SI32("axis", 1));
        }
        string q = g.Op("top.Reshape", [queryPos], prefix + "window_q", [b.Batch, 1, b.Len, 1], OpAttr.I64s("shape", b.Batch, 1, b.Len, 1));
        string k = g.Op("top.Reshape", [keyPos], prefix + "window_k", [b.Batch, 1, 1, b.Keys], OpAttr.I64s("shape", b.Batch, 1, 1, b.Keys));
        long[] maskShape = [b.Batch, 1, b.Len, b.Keys];
        string distance = g.Op("top.Sub", [q, k], prefix + "window_distance", maskShape);
        string outside = g.Op("top.CompareConst", [distance], prefix + "window_outside", maskShape,
            OpAttr.String("mode", "GreaterOrEqual"), OpAttr.F64("const_val", window), OpAttr.Of("inversed", false));
        string fill = g.Op("top.MulConst", [outside], prefix + "window_fill", maskShape, OpAttr.F64("const_val", NetContract.MaskFill));
        return g.Op("top.Add", [mask, fill], prefix + "window_mask", maskShape);
    }

    /// <summary>Post-attention norm, gate/up of the part's intermediate columns, SiLU·up and down_proj (of those columns).</summary>
    private static string Mlp(Context c, BlockDims b, Part part, string res, string? name)
    {
        if (c.Config.IsSparseLayer(b.Layer)) return MoeMlp(c, b, part, res, name);
        var g = c.G;
        int layer = b.Layer, batch = b.Batch, len = b.Len;
        long h = b.Hidden, inter = part.Share(b.Inter);
        WeightEntry postNorm = c.Need(WeightRole.PostAttentionNorm, layer);
        string ln2 = g.Op("top.RMSNorm", [res, c.Plain(postNorm, h)], Stem(postNorm.Key), [batch, len, h], OpAttr.F64("eps", c.Config.RmsNormEps));
        WeightEntry gateW = c.Need(WeightRole.MlpGate, layer), upW = c.Need(WeightRole.MlpUp, layer), downW = c.Need(WeightRole.MlpDown, layer);
        string gate = Linear(c, gateW, c.Find(WeightRole.MlpGateBias, layer), ln2, null, [batch, len, inter], h, b.Inter, part);
        string act = c.Config.HiddenAct == "gelu_pytorch_tanh"
            ? g.Op("top.GELU", [gate], Stem(gateW.Key) + ".gelu", [batch, len, inter], OpAttr.String("approx_mode", "tanh"))
            : g.Op("top.SiLU", [gate], Stem(gateW.Key) + ".silu", [batch, len, inter]);
        string up = Linear(c, upW, c.Find(WeightRole.MlpUpBias, layer), ln2, null, [batch, len, inter], h, b.Inter, part);
        string mul = g.Op("top.Mul", [act, up], Stem(upW.Key) + ".mul", [batch, len, inter]);
        // A row-parallel down_proj's bias is added once after the reduce (BuildShard step 2).
        WeightEntry? downBias = part.IsWhole ? c.Find(WeightRole.MlpDownBias, layer) : null;
        bool outputNorm = c.Find(WeightRole.MlpOutputNorm, layer) is not null;
        if (outputNorm && !part.IsWhole)
            throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {c.Piece.Name}: a norm on the MLP output cannot be split across devices; use NumDevice=1.");
        string down = Linear(c, downW, downBias, mul, c.Config.ResidualMultiplier == 1 && !outputNorm ? name : null, [batch, len, h], b.Inter, h, part);
        down = OutputNorm(c, WeightRole.MlpOutputNorm, b, down, c.Config.ResidualMultiplier == 1 ? name : null);
        return ResidualBranch(c, down, [batch, len, h], name);
    }

    /// <summary>cap · tanh(x / cap): gemma2's soft-capping, named <paramref name="name"/>.</summary>
    private static string SoftCap(GraphAssembler g, string x, double cap, string name, long[] shape)
    {
        string scaled = g.Op("top.MulConst", [x], name + ".softcap_in", shape, OpAttr.F64("const_val", 1.0 / cap));
        string tanh = g.Op("top.Tanh", [scaled], name + ".softcap_tanh", shape);
        return g.Op("top.MulConst", [tanh], name, shape, OpAttr.F64("const_val", cap));
    }

    /// <summary>Gemma's norm on a branch's output before the residual add, when the family has <paramref name="role"/>.</summary>
    private static string OutputNorm(Context c, WeightRole role, BlockDims b, string branch, string? name = null)
    {
        if (c.Find(role, b.Layer) is not { } norm) return branch;
        return c.G.Op("top.RMSNorm", [branch, c.Plain(norm, b.Hidden)], name ?? Stem(norm.Key), b.States, OpAttr.F64("eps", c.Config.RmsNormEps));
    }

    /// <summary>A residual branch's output times the family's residual multiplier (minicpm's scale_depth/√layers); named
    /// <paramref name="name"/> (or after the branch) when scaled, unchanged otherwise.</summary>
    private static string ResidualBranch(Context c, string branch, long[] shape, string? name = null) =>
        c.Config.ResidualMultiplier == 1 ? branch
            : c.G.Op("top.MulConst", [branch], name ?? branch + ".scale", shape, OpAttr.F64("const_val", c.Config.ResidualMultiplier));

    /// <summary>output_states = residual + the MLP result(s), then the final RMSNorm when the last block carries it.</summary>
    private static string BlockOutput(Context c, BlockDims b, string res, IReadOnlyList<string> mlp)
    {
        var g = c.G;
        string mlpStem = MlpOutputStem(c, b.Layer);
        bool finalNorm = c.Model.FinalNormInLastBlock && b.Layer == c.Config.NumLayers - 1;
        string output = Sum(g, res, mlp, mlpStem, finalNorm ? mlpStem + ".add" : "output_states", b.States);
        if (finalNorm)
        {
            WeightEntry norm = c.Need(WeightRole.FinalNorm);
            bool scaled = c.Config.FinalHiddenMultiplier != 1;
            output = g.Op("top.RMSNorm", [output, c.Plain(norm, b.Hidden)], scaled ? Stem(norm.Key) : "output_states", b.States, OpAttr.F64("eps", c.Config.RmsNormEps));
            if (scaled) output = g.Op("top.MulConst", [output], "output_states", b.States, OpAttr.F64("const_val", c.Config.FinalHiddenMultiplier));
        }
        return output;
    }

    /// <summary>first + addends[0] + addends[1] + …, left to right; the last add is named <paramref name="name"/>, the others prefix.sum{i}.</summary>
    private static string Sum(GraphAssembler g, string first, IReadOnlyList<string> addends, string prefix, string name, long[] shape)
    {
        string acc = first;
        for (int i = 0; i < addends.Count; i++)
            acc = g.Op("top.Add", [acc, addends[i]], i == addends.Count - 1 ? name : $"{prefix}.sum{i}", shape);
        return acc;
    }

    /// <summary>x·cos + rotate_half(x)·sin with rotate_half(x) = [−x2, x1] over the halves of the head dimension.</summary>
    private static string RotateHalf(GraphAssembler g, string x, string cos, string sin, string name)
    {
        long[] shape = g.Shape(x);
        long half = shape[3] / 2;
        long[] halfShape = [shape[0], shape[1], shape[2], half];
        string mul0 = g.Op("top.Mul", [x, cos], name + ".mul0", shape);
        string x1 = g.Op("top.Slice", [x, "", "", ""], name + ".slice1", halfShape,
            OpAttr.I64s("offset", 0, 0, 0, 0), OpAttr.I64s("steps", 1, 1, 1, 1), OpAttr.I64s("ends", halfShape), OpAttr.I64s("axes"));
        string x2 = g.Op("top.Slice", [x, "", "", ""], name + ".slice2", halfShape,
            OpAttr.I64s("offset", 0, 0, 0, half), OpAttr.I64s("steps", 1, 1, 1, 1), OpAttr.I64s("ends", shape), OpAttr.I64s("axes"));
        string neg = g.Op("top.MulConst", [x2], name + ".neg", halfShape, OpAttr.F64("const_val", -1.0));
        string rotated = g.Op("top.Concat", [neg, x1], name + ".concat", shape, OpAttr.SI32("axis", 3));
        string mul1 = g.Op("top.Mul", [rotated, sin], name + ".mul1", shape);
        return g.Op("top.Add", [mul0, mul1], name, shape);
    }

    /// <summary>
    /// y = x·Wᵀ (+ b) with W in the checkpoint's [N, K] layout: top.MatMul for activation-dtype weights, top.A16MatMul
    /// with qweight/scales/qzeros for weight-only quantized ones. The result is named after the weight (its stem).
    /// <paramref name="k"/> and <paramref name="n"/> are the stored weight's dimensions; with a device <paramref name="part"/>
    /// the graph reads only the device's slice (<see cref="TensorParallel.SplitOf"/>): output rows N (and the bias) for a
    /// column-parallel layer, input columns K for a row-parallel one, whose bias the caller adds once after the reduce.
    /// </summary>
    private static string Linear(Context c, WeightEntry w, WeightEntry? bias, string input, string? name, long[] outShape, long k, long n, Part? part = null)
    {
        var g = c.G;
        c.CheckShape(w, [n, k]);
        Part p = part ?? Part.Whole;
        WeightSplit split = p.IsWhole ? WeightSplit.Replicated : TensorParallel.SplitOf(w.Role);
        var (n0, nl) = split == WeightSplit.OutputRows ? p.Of(n) : (0L, n);
        var (k0, kl) = split == WeightSplit.InputColumns ? p.Of(k) : (0L, k);
        if (outShape[^1] != nl)
            throw new InvalidOperationException($"Piece {c.Piece.Name}: {w.Key} gives {nl} columns, the caller expects {outShape[^1]}.");
        string result = name ?? Stem(w.Key);
        string biasName = "";
        if (bias is not null)
        {
            if (split == WeightSplit.InputColumns)
                throw new InvalidOperationException($"Piece {c.Piece.Name}: the bias of row-parallel {w.Key} must be added once after the reduce.");
            biasName = split == WeightSplit.OutputRows ? c.PlainSlice(bias, n, n0, nl) : c.Plain(bias, n);
        }
        // The slice of a stored [N, ·] tensor: rows n0.. for a column-parallel layer, the given columns for a row-parallel one.
        WeightSlice? Cut(long[] stored, long columnStart, long columnCount) => split switch
        {
            WeightSplit.OutputRows => new WeightSlice(0, n0, nl, stored),
            WeightSplit.InputColumns => new WeightSlice(1, columnStart, columnCount, stored),
            _ => null,
        };
        if (w.Storage != WeightStorage.Quantized)
        {
            string weight = g.Weight(w, WeightPart.Value, w.Key, c.StoredType(w), w.Shape, Cut(w.Shape, k0, kl));
            return g.Op("top.MatMul", [input, weight, biasName], result, outShape,
                OpAttr.Of("right_transpose", true), OpAttr.Of("do_relu", false));
        }
        // The entry's own width (mixed precision, an 8-bit lm_head) or the model's.
        QuantScheme q = c.Model.SchemeOf(w);
        if (q.Bits is not (4 or 8))
            throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Weight '{w.Key}': {q.Bits}-bit weights are not supported (4 or 8).");
        GroupSizeRule.Check(q, kl, $"Weight '{w.Key}'");
        c.AnyQuantized = true;
        if (w.InputPermuted)
        {
            // Act-order: stored column j holds source input perm[j], so the matmul reads x[…, perm] (groups stay contiguous).
            if (split == WeightSplit.InputColumns)
                throw new InvalidOperationException($"Piece {c.Piece.Name}: row-parallel {w.Key} has permuted inputs; resolve refuses this split.");
            string perm = g.Weight(w, WeightPart.InputPermutation, WeightKeys.InputPermutation(w.Key), GraphDType.SI32, [k]);
            input = g.Op("top.Gather", [input, perm], Stem(w.Key) + ".input", [.. outShape[..^1], k], OpAttr.SI32("axis", outShape.Length - 1));
        }
        long groups = q.GroupSize > 0 ? k / q.GroupSize : 1;
        long[] qShape = [n, k * q.Bits / 8], groupShape = [n, groups];
        string qweight = g.Weight(w, WeightPart.QWeight, WeightKeys.QWeight(w.Key), GraphDType.UI8, qShape, Cut(qShape, k0 * q.Bits / 8, kl * q.Bits / 8));
        // A K slice covers whole groups of scales/zeros; per-channel (group 0) scales span the full row and stay whole.
        WeightSlice? groupSlice = split == WeightSplit.InputColumns && q.GroupSize == 0 ? null
            : Cut(groupShape, q.GroupSize > 0 ? k0 / q.GroupSize : 0, q.GroupSize > 0 ? kl / q.GroupSize : 0);
        string scales = g.Weight(w, WeightPart.Scales, WeightKeys.Scales(w.Key), GraphDType.F32, groupShape, groupSlice);
        string zeros = g.Weight(w, WeightPart.QZeros, WeightKeys.QZeros(w.Key), GraphDType.UI8, groupShape, groupSlice);
        return g.Op("top.A16MatMul", [input, qweight, scales, zeros, biasName], result, outShape,
            OpAttr.Of("right_transpose", true), OpAttr.I64("q_group_size", q.GroupSize), OpAttr.I64("weight_bits", q.Bits));
    }
}
