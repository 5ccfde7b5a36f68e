using System.Numerics.Tensors;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Reference;

/// <summary>What one forward call saw, layer by layer: the oracle for each exported piece.</summary>
public sealed class ReferenceTrace
{
    /// <summary>The embeddings of the new tokens, [n, H].</summary>
    public float[] Embeddings { get; set; } = [];
    /// <summary>Per layer: the hidden state entering the layer, [n, H].</summary>
    public List<float[]> LayerInputs { get; } = [];
    /// <summary>Per layer: the keys (after RoPE) and values of the new tokens, [n, kv_heads, head_dim].</summary>
    public List<float[]> Keys { get; } = [];
    public List<float[]> Values { get; } = [];
    /// <summary>The hidden state after the last layer, before the final norm, [n, H].</summary>
    public float[] LastHidden { get; set; } = [];
    /// <summary>After the final norm, [n, H] (what lm_head multiplies).</summary>
    public float[] NormedHidden { get; set; } = [];
    /// <summary>
    /// Mixture-of-experts layers: the smallest relative gap, over the tokens and sparse layers, between the probability
    /// of the last expert a token chose and the best one it did not, (p_k − p_k+1) / p_k; +∞ without experts. Near 0 the
    /// choice is a near-tie that any rounding may resolve the other way.
    /// </summary>
    public double RouterMargin { get; set; } = double.PositiveInfinity;
    /// <summary>Mixture-of-experts layers, in call order: the layer and each new token's chosen experts, most probable first, [n, top-k].</summary>
    public List<(int Layer, int[] Experts)> Routes { get; } = [];
}

/// <summary>
/// An f32 forward pass of a llama / qwen2 / qwen3 causal LM straight from the source checkpoint, written as plain
/// loops over Hugging Face's math (RMSNorm, q/k/v projections with optional bias, qwen3's per-head q/k norm, RoPE
/// with rope_scaling, grouped-query causal attention, SwiGLU MLP, tied or separate lm_head). It shares no code with
/// the graph layer so that it can serve as the oracle for every exported piece and for the built model.
/// <see cref="Forward"/> appends the given tokens to a KV cache: call it with the prompt (prefill), then with one
/// token at a time (decode).
/// </summary>
public sealed partial class ReferenceModel
{
    private readonly ICheckpoint _checkpoint;
    private readonly ModelFamily _family;
    private readonly Dictionary<string, float[]> _weights = new(StringComparer.Ordinal);
    private readonly bool _keepWeights;
    private readonly List<float>[] _keyCache;
    private readonly List<float>[] _valueCache;
    private readonly float[] _invFreq;
    private readonly float[] _longInvFreq;
    private readonly float[] _localInvFreq;
    private readonly PreQuantizedFormat? _preQuantized;
    /// <summary>Calibration's observer of each linear's input (null in every other forward).</summary>
    private LinearInputObserver? _linearInputs;

    /// <param name="keepWeights">Keep every weight in memory as f32 after its first use (fast; 4 bytes per parameter).
    /// When false, each weight is read from the checkpoint whenever it is needed.</param>
    /// <param name="droppedTensors">Tensors (names or <c>*</c> patterns) the build dropped on purpose (LlmIgnoreTensors).</param>
    public ReferenceModel(ICheckpoint checkpoint, ModelConfig config, bool keepWeights = true, IReadOnlyList<string>? droppedTensors = null)
    {
        // Fused tensors (qkv_proj, gate_up_proj) are read as their row ranges; nothing else is transformed.
        _checkpoint = FamilyCheckpoint.ForReference(checkpoint, config);
        Config = config;
        _family = ModelFamilies.Get(config.ModelType);
        _keepWeights = keepWeights;
        _preQuantized = PreQuantizedFormat.FromConfig(config.QuantizationConfig, Path.Combine(checkpoint.Directory, "config.json"));
        if (config.HiddenAct is not ("silu" or "gelu_pytorch_tanh"))
            throw new LlmBuildException(ErrorCodes.ReferenceUnsupported, $"hidden_act '{config.HiddenAct}' is not supported by the reference model (silu, gelu_pytorch_tanh).");
        _keyCache = Enumerable.Range(0, config.NumLayers).Select(_ => new List<float>()).ToArray();
        _valueCache = Enumerable.Range(0, config.NumLayers).Select(_ => new List<float>()).ToArray();
        _invFreq = InverseFrequencies(config, longFactors: false);
        _longInvFreq = config.RopeScaling?.Type == "longrope" ? InverseFrequencies(config, longFactors: true) : _invFreq;
        // gemma3's sliding layers: their own base, no rope_scaling.
        _localInvFreq = config.LocalRopeTheta is { } localTheta
            ? InverseFrequencies(config with { RopeTheta = localTheta, RopeScaling = null }, longFactors: false) : _invFreq;
        RefuseUnreadTensors(droppedTensors ?? []);
    }

    /// <summary>
    /// The reference reads tensors by the family's roles, so a tensor no role names would be left out of the oracle as
    /// silently as out of the build: it refuses such a checkpoint itself (ignorable buffers, pre-quantized companions and
    /// tensors the user dropped on purpose aside), so verify cannot pass a build that lost weights.
    /// </summary>
    private void RefuseUnreadTensors(IReadOnlyList<string> dropped)
    {
        var read = new HashSet<string>(StringComparer.Ordinal);
        foreach (WeightRole role in Enum.GetValues<WeightRole>())
        {
            if (!_family.Has(role)) continue;
            if (!ModelFamily.IsLayerRole(role)) { read.Add(_family.TensorName(role)); continue; }
            int experts = ModelFamily.IsExpertRole(role) ? Config.Moe?.NumExperts ?? 0 : 1;
            for (int layer = 0; layer < Config.NumLayers; layer++)
                for (int expert = 0; expert < experts; expert++) read.Add(_family.TensorName(role, layer, expert));
        }
        if (Config.Vision is { } vision) read.UnionWith(Plan.VisionPlan.TensorNames(_family, vision));
        var (_, unread) = TensorAccounting.Unused(_checkpoint, _family, read, dropped);
        if (unread.Count > 0)
            throw new LlmBuildException(ErrorCodes.UnusedTensor,
                $"The reference forward of family {_family.Name} reads no role for {unread.Count} tensor(s) of the checkpoint in '{_checkpoint.Directory}': " +
                $"{TensorAccounting.Listing(unread)}. " +
                "It cannot vouch for a model it does not fully read; list deliberately dropped tensors in LlmIgnoreTensors.", _checkpoint.Directory);
    }

    public ModelConfig Config { get; }

    /// <summary>Tokens in the KV cache: the position the next token gets.</summary>
    public int Position { get; private set; }

    public void Reset()
    {
        foreach (var c in _keyCache) c.Clear();
        foreach (var c in _valueCache) c.Clear();
        Position = 0;
        RopeDelta = 0;
    }

    /// <summary>
    /// M-RoPE models: the offset of the rotary position from the cache position for tokens after a multimodal prefill
    /// (Hugging Face's rope_deltas: the last prompt position + 1 − the prompt length); 0 otherwise.
    /// </summary>
    public int RopeDelta { get; private set; }

    /// <summary>The 3-component positions [3, n] (row-major) of the tokens being run by <see cref="ForwardMultimodal"/>.</summary>
    private int[]? _positions3;

    /// <summary>Runs the tokens at positions Position..Position+n−1 and returns their logits, [n, vocab].</summary>
    public float[] Forward(ReadOnlySpan<int> tokens, ReferenceTrace? trace = null) => Forward(tokens, trace, null);

    /// <summary>
    /// A multimodal prefill (M-RoPE families): the tokens with their 3-component positions <paramref name="positions"/>
    /// ([3, n] row-major: temporal, height, width, as get_rope_index gives them) and the image embeddings
    /// <paramref name="imageEmbeds"/> ([k, H]) in place of the k image-pad tokens' embeddings, in order. Later
    /// <see cref="Forward(ReadOnlySpan{int}, ReferenceTrace?)"/> calls continue at cache position + <see cref="RopeDelta"/>.
    /// </summary>
    public float[] ForwardMultimodal(ReadOnlySpan<int> tokens, int[] positions, float[]? imageEmbeds, ReferenceTrace? trace = null)
    {
        int n = tokens.Length;
        if (Config.MropeSection is null || Config.Vision is null)
            throw new LlmBuildException(ErrorCodes.ReferenceUnsupported, $"model_type '{Config.ModelType}' takes no images or 3-component positions.");
        if (positions.Length != 3 * n)
            throw new LlmBuildException(ErrorCodes.ReferenceUnsupported, $"M-RoPE positions must be [3, {n}], got {positions.Length} values.");
        _positions3 = positions;
        try
        {
            float[] logits = Forward(tokens, trace, imageEmbeds);
            RopeDelta = positions.Max() + 1 - Position;
            return logits;
        }
        finally { _positions3 = null; }
    }

    private float[] Forward(ReadOnlySpan<int> tokens, ReferenceTrace? trace, float[]? imageEmbeds)
    {
        var cfg = Config;
        int n = tokens.Length;
        float[] h = Embed(tokens);
        int hidden = cfg.HiddenSize;
        if (imageEmbeds is not null)
        {
            int[] rows = ImageSplice.Rows(tokens, cfg.Vision!.ImageTokenId, imageEmbeds.Length, hidden);
            for (int i = 0; i < rows.Length; i++) imageEmbeds.AsSpan(i * hidden, hidden).CopyTo(h.AsSpan(rows[i] * hidden));
        }
        if (trace is not null) trace.Embeddings = (float[])h.Clone();

        for (int layer = 0; layer < cfg.NumLayers; layer++)
        {
            trace?.LayerInputs.Add((float[])h.Clone());
            Layer(layer, h, n, trace);
        }
        if (trace is not null) trace.LastHidden = (float[])h.Clone();
        float[] logits = Head(h, n, trace);
        Position += n;
        return logits;
    }

    /// <summary>The (scaled) embeddings of the tokens, [n, H].</summary>
    public float[] Embed(ReadOnlySpan<int> tokens)
    {
        var cfg = Config;
        int n = tokens.Length, hidden = cfg.HiddenSize, vocab = cfg.VocabSize;
        var h = new float[n * hidden];
        float[] embedding = Weight(_family.TensorName(WeightRole.Embedding));
        for (int t = 0; t < n; t++)
        {
            if ((uint)tokens[t] >= (uint)vocab)
                throw new LlmBuildException(ErrorCodes.ReferenceUnsupported, $"Token id {tokens[t]} is outside the vocabulary (0..{vocab - 1}).");
            embedding.AsSpan(tokens[t] * hidden, hidden).CopyTo(h.AsSpan(t * hidden));
        }
        if (cfg.EmbeddingMultiplier != 1) TensorPrimitives.Multiply(h, (float)cfg.EmbeddingMultiplier, h);
        return h;
    }

    /// <summary>The final norm, lm_head and logit soft-capping over the last hidden states [n, H]: logits [n, vocab].</summary>
    public float[] Head(float[] h, int n, ReferenceTrace? trace = null)
    {
        var cfg = Config;
        int hidden = cfg.HiddenSize, vocab = cfg.VocabSize;
        float[] normed = RmsNorm(h, n, hidden, Weight(_family.TensorName(WeightRole.FinalNorm)));
        if (cfg.FinalHiddenMultiplier != 1) TensorPrimitives.Multiply(normed, (float)cfg.FinalHiddenMultiplier, normed);
        if (trace is not null) trace.NormedHidden = (float[])normed.Clone();
        float[] head = Config.TieWordEmbeddings ? Weight(_family.TensorName(WeightRole.Embedding)) : Weight(_family.TensorName(WeightRole.LmHead));
        float[] logits = Linear(normed, n, hidden, head, vocab, null);
        if (cfg.FinalLogitSoftcap > 0)
        {
            float cap = (float)cfg.FinalLogitSoftcap;
            for (int i = 0; i < logits.Length; i++) logits[i] = MathF.Tanh(logits[i] / cap) * cap;
        }
        return logits;
    }

    private void Layer(int layer, float[] h, int n, ReferenceTrace? trace)
    {
        var cfg = Config;
        int hidden = cfg.HiddenSize, heads = cfg.NumHeads, kvHeads = cfg.NumKvHeads, d = cfg.HeadDim, inter = cfg.IntermediateSize;
        int qd = heads * d, kvd = kvHeads * d;

        float[] x = RmsNorm(h, n, hidden, Weight(Name(WeightRole.InputNorm, layer)));
        _linearInputs?.Invoke(layer, LinearInput.Attention, x, n, hidden);
        float[] q = Linear(x, n, hidden, Weight(Name(WeightRole.QProj, layer)), qd, Optional(WeightRole.QBias, layer));
        float[] k = Linear(x, n, hidden, Weight(Name(WeightRole.KProj, layer)), kvd, Optional(WeightRole.KBias, layer));
        float[] v = Linear(x, n, hidden, Weight(Name(WeightRole.VProj, layer)), kvd, Optional(WeightRole.VBias, layer));
        if (_family.Has(WeightRole.QNorm))
        {
            // qwen3: RMSNorm over each head's vector before RoPE.
            q = RmsNorm(q, n * heads, d, Weight(Name(WeightRole.QNorm, layer)));
            k = RmsNorm(k, n * kvHeads, d, Weight(Name(WeightRole.KNorm, layer)));
        }
        for (int t = 0; t < n; t++)
        {
            int position = Position + t;
            // M-RoPE: the token's temporal/height/width positions (a multimodal prefill), else the cache position + delta for all three.
            var pos3 = _positions3 is { } p3 ? (p3[t], p3[n + t], p3[2 * n + t]) : (position + RopeDelta, position + RopeDelta, position + RopeDelta);
            for (int head = 0; head < heads; head++) Rope(q.AsSpan((t * heads + head) * d, d), position, layer, pos3);
            for (int head = 0; head < kvHeads; head++) Rope(k.AsSpan((t * kvHeads + head) * d, d), position, layer, pos3);
        }
        trace?.Keys.Add((float[])k.Clone());
        trace?.Values.Add((float[])v.Clone());
        _keyCache[layer].AddRange(k);
        _valueCache[layer].AddRange(v);

        // Causal grouped-query attention over the cache (which now ends with the new tokens).
        float[] keys = [.. _keyCache[layer]], values = [.. _valueCache[layer]];
        int total = Position + n, group = heads / kvHeads;
        // head_dim^−½, or gemma's query_pre_attn_scalar^−½; gemma2 soft-caps the scaled scores.
        float scale = cfg.AttentionScale > 0 ? (float)cfg.AttentionScale : 1f / MathF.Sqrt(d);
        float softcap = (float)cfg.AttentionSoftcap;
        var attn = new float[n * qd];
        var scores = new float[total];
        for (int t = 0; t < n; t++)
        {
            int visible = Position + t + 1;
            // A sliding window hides keys p − j ≥ window (mistral: position p sees keys p − window + 1 … p).
            int window = cfg.WindowOf(layer), first = window > 0 ? Math.Max(0, visible - window) : 0;
            for (int head = 0; head < heads; head++)
            {
                int kvHead = head / group;
                var qv = q.AsSpan((t * heads + head) * d, d);
                float max = float.NegativeInfinity;
                for (int j = first; j < visible; j++)
                {
                    scores[j] = TensorPrimitives.Dot(qv, keys.AsSpan((j * kvHeads + kvHead) * d, d)) * scale;
                    if (softcap > 0) scores[j] = MathF.Tanh(scores[j] / softcap) * softcap;
                    max = MathF.Max(max, scores[j]);
                }
                float sum = 0;
                for (int j = first; j < visible; j++) { scores[j] = MathF.Exp(scores[j] - max); sum += scores[j]; }
                var o = attn.AsSpan((t * heads + head) * d, d);
                for (int j = first; j < visible; j++)
                {
                    float p = scores[j] / sum;
                    var vv = values.AsSpan((j * kvHeads + kvHead) * d, d);
                    for (int i = 0; i < d; i++) o[i] += p * vv[i];
                }
            }
        }
        _linearInputs?.Invoke(layer, LinearInput.AttentionOutput, attn, n, qd);
        float[] projected = Linear(attn, n, qd, Weight(Name(WeightRole.OProj, layer)), hidden, Optional(WeightRole.OBias, layer));
        if (_family.Has(WeightRole.AttentionOutputNorm)) projected = RmsNorm(projected, n, hidden, Weight(Name(WeightRole.AttentionOutputNorm, layer)));
        if (cfg.ResidualMultiplier != 1) TensorPrimitives.Multiply(projected, (float)cfg.ResidualMultiplier, projected);
        TensorPrimitives.Add(h, projected, h);

        float[] y = RmsNorm(h, n, hidden, Weight(Name(WeightRole.PostAttentionNorm, layer)));
        _linearInputs?.Invoke(layer, LinearInput.Mlp, y, n, hidden);
        float[] down;
        if (cfg.IsSparseLayer(layer)) down = SparseMoe(layer, y, n, trace);
        else
        {
            float[] gate = Linear(y, n, hidden, Weight(Name(WeightRole.MlpGate, layer)), inter, Optional(WeightRole.MlpGateBias, layer));
            float[] up = Linear(y, n, hidden, Weight(Name(WeightRole.MlpUp, layer)), inter, Optional(WeightRole.MlpUpBias, layer));
            bool gelu = cfg.HiddenAct == "gelu_pytorch_tanh";
            for (int i = 0; i < gate.Length; i++)
            {
                float g = gate[i];
                float activated = gelu ? 0.5f * g * (1f + MathF.Tanh(MathF.Sqrt(2f / MathF.PI) * (g + 0.044715f * g * g * g))) : g / (1f + MathF.Exp(-g));
                gate[i] = activated * up[i];
            }
            _linearInputs?.Invoke(layer, LinearInput.MlpDown, gate, n, inter);
            down = Linear(gate, n, inter, Weight(Name(WeightRole.MlpDown, layer)), hidden, Optional(WeightRole.MlpDownBias, layer));
        }
        if (_family.Has(WeightRole.MlpOutputNorm)) down = RmsNorm(down, n, hidden, Weight(Name(WeightRole.MlpOutputNorm, layer)));
        if (cfg.ResidualMultiplier != 1) TensorPrimitives.Multiply(down, (float)cfg.ResidualMultiplier, down);
        TensorPrimitives.Add(h, down, h);
    }

    /// <summary>
    /// Rotates one head vector in place, angle = position · inv_freq (f32, as HF): rotate-half pairs (i, i + r/2) or
    /// interleaved pairs (2i, 2i + 1) over the first r = rotary dims; the rest of the head is left alone. longrope uses
    /// the long factors from original_max_position_embeddings on and scales cos/sin by its attention factor.
    /// </summary>
    private void Rope(Span<float> x, int position, int layer, (int T, int H, int W) mrope)
    {
        var cfg = Config;
        int pairs = cfg.RotatedDims / 2;
        RopeScaling? scaling = cfg.RopeScaling;
        bool longRope = scaling?.Type == "longrope";
        float[] inv = cfg.UsesLocalRope(layer) ? _localInvFreq
            : longRope && position >= scaling!.OriginalMaxPositionEmbeddings ? _longInvFreq : _invFreq;
        float factor = longRope && !cfg.UsesLocalRope(layer) ? (float)scaling!.AttentionFactor : 1f;
        for (int i = 0; i < pairs; i++)
        {
            // M-RoPE: frequency i takes the temporal, height or width position by mrope_section.
            int p = cfg.MropeSection is null ? position : cfg.MropeComponent(i) switch { 0 => mrope.T, 1 => mrope.H, _ => mrope.W };
            float angle = p * inv[i];
            float c = MathF.Cos(angle) * factor, s = MathF.Sin(angle) * factor;
            (int ia, int ib) = _family.RopeMode == RopeMode.Interleaved ? (2 * i, 2 * i + 1) : (i, i + pairs);
            float a = x[ia], b = x[ib];
            x[ia] = a * c - b * s;
            x[ib] = b * c + a * s;
        }
    }

    /// <summary>HF's inverse frequencies in f32 with rope_scaling (default, linear, llama3).</summary>
    private static float[] InverseFrequencies(ModelConfig cfg, bool longFactors)
    {
        int d = cfg.RotatedDims;
        var inv = new float[d / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = 1f / MathF.Pow((float)cfg.RopeTheta, 2f * i / d);
        if (cfg.RopeScaling is { } s)
        {
            if (s.Type == "linear")
                for (int i = 0; i < inv.Length; i++) inv[i] /= (float)s.Factor;
            else if (s.Type == "llama3")
            {
                float low = (float)(s.OriginalMaxPositionEmbeddings / s.LowFreqFactor);
                float high = (float)(s.OriginalMaxPositionEmbeddings / s.HighFreqFactor);
                for (int i = 0; i < inv.Length; i++)
                {
                    float wavelen = 2 * MathF.PI / inv[i];
                    float scaled = wavelen > low ? inv[i] / (float)s.Factor : inv[i];
                    if (!(wavelen < high) && !(wavelen > low))
                    {
                        float smooth = (float)((s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor));
                        scaled = (1 - smooth) * scaled / (float)s.Factor + smooth * scaled;
                    }
                    inv[i] = scaled;
                }
            }
            else if (s.Type == "longrope")
            {
                var factors = (longFactors ? s.LongFactor : s.ShortFactor)!;
                for (int i = 0; i < inv.Length; i++) inv[i] = 1f / ((float)factors[i] * MathF.Pow((float)cfg.RopeTheta, 2f * i / d));
            }
            else throw new LlmBuildException(ErrorCodes.ReferenceUnsupported, $"rope_scaling type '{s.Type}' is not supported.");
        }
        return inv;
    }

    /// <summary>HF RMSNorm: x / sqrt(mean(x²) + eps) · weight, over rows of <paramref name="width"/>.</summary>
    private float[] RmsNorm(float[] x, int rows, int width, float[] weight)
    {
        var y = new float[rows * width];
        float eps = (float)Config.RmsNormEps;
        for (int r = 0; r < rows; r++)
        {
            var row = x.AsSpan(r * width, width);
            float inv = 1f / MathF.Sqrt(TensorPrimitives.Dot(row, row) / width + eps);
            var o = y.AsSpan(r * width, width);
            // Gemma multiplies by (1 + w) (NormWeightOffset), computed in f32.
            float offset = (float)_family.NormWeightOffset;
            for (int i = 0; i < width; i++) o[i] = (offset + weight[i]) * (row[i] * inv);
        }
        return y;
    }

    /// <summary>y[r, o] = x[r, :] · W[o, :] + b[o] with W in the checkpoint's [out, in] layout.</summary>
    private static float[] Linear(float[] x, int rows, int inFeatures, float[] w, int outFeatures, float[]? bias)
    {
        var y = new float[rows * outFeatures];
        Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(0, outFeatures, Math.Max(64, outFeatures / (4 * Environment.ProcessorCount))), range =>
        {
            for (int o = range.Item1; o < range.Item2; o++)
            {
                var wr = w.AsSpan(o * inFeatures, inFeatures);
                for (int r = 0; r < rows; r++)
                    y[r * outFeatures + o] = TensorPrimitives.Dot(x.AsSpan(r * inFeatures, inFeatures), wr) + (bias?[o] ?? 0f);
            }
        });
        return y;
    }

    private string Name(WeightRole role, int layer) => _family.TensorName(role, layer);

    private float[]? Optional(WeightRole role, int layer) =>
        _family.Has(role) && _checkpoint.Contains(Name(role, layer)) ? Weight(Name(role, layer)) : null;

    private float[] Weight(string name)
    {
        lock (_weights)
        {
            if (_weights.TryGetValue(name, out float[]? cached)) return cached;
        }
        float[] data;
        if (_checkpoint.Contains(name))
        {
            data = new float[_checkpoint.GetInfo(name).ElementCount];
            _checkpoint.ReadFloat32(name, data);
        }
        else if (_preQuantized is not null && PreQuantizedUnpacker.IsPacked(_checkpoint, name))
            // The source's own dequantization (scale · (q − zero), act-order inputs in their original places).
            data = LinearQuantizer.DequantizeInSourceOrder(PreQuantizedUnpacker.Unpack(_checkpoint, _preQuantized, name));
        else
            throw new LlmBuildException(ErrorCodes.ReferenceUnsupported, $"The checkpoint has no tensor '{name}', which model_type '{Config.ModelType}' needs.");
        if (_keepWeights) lock (_weights) _weights[name] = data;
        return data;
    }
}
