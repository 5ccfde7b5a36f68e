using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>
/// Drives a model's pieces the way the runtime does (DESIGN §11): embedding → blocks (prefill, padded to the net's
/// length, causal mask) → lm_head on the last real row, then embedding_cache → block_cache → lm_head per token with the
/// KV cache kept in [SeqLength, kv_heads, head_dim] buffers. Batch 1. Used to check the chained pieces against the reference.
/// </summary>
internal sealed class PieceChain
{
    private readonly ResolvedModel _model;
    private readonly IWeightSource _weights;
    private readonly Dictionary<string, GraphInterpreter> _interpreters = new(StringComparer.Ordinal);
    private readonly float[][] _k, _v;
    private readonly int _kvRow;

    public PieceChain(ResolvedModel model, IWeightSource weights)
    {
        _model = model;
        _weights = weights;
        var c = model.Config;
        _kvRow = c.NumKvHeads * c.HeadDim;
        _k = Enumerable.Range(0, c.NumLayers).Select(_ => new float[model.SeqLength * _kvRow]).ToArray();
        _v = Enumerable.Range(0, c.NumLayers).Select(_ => new float[model.SeqLength * _kvRow]).ToArray();
    }

    public int Length { get; private set; }

    /// <summary>Stores the KV cache rounded to bf16, as a bf16 build does (the graphs stay f32).</summary>
    public bool Bf16KvCache { get; init; }

    /// <summary>Rounds the states passed between nets (embedding → block → … → lm_head) to bf16, as a bf16 build does.</summary>
    public bool Bf16States { get; init; }

    /// <summary>Rounds every op's output to bf16 too: a stand-in for a forward computed in bf16 throughout.</summary>
    public bool Bf16EveryOp { get; init; }

    /// <summary>Rounds only the keys (true) or only the values (false) of the KV cache when <see cref="Bf16KvCache"/> is set; null: both.</summary>
    public bool? Bf16KvOnlyKeys { get; init; }

    /// <summary>Sees every op's output after it ran (and after <see cref="Bf16EveryOp"/>'s rounding), with the piece that ran it.</summary>
    public Action<string, GraphOp, int, float[]>? Observe { get; init; }

    /// <summary>Every TopK's chosen indices in run order (the experts of each mixture-of-experts block), with the piece that ran it.</summary>
    public List<(string Piece, int[] Indices)> ChosenExperts { get; } = [];

    private static void RoundInPlace(float[] values)
    {
        for (int i = 0; i < values.Length; i++) values[i] = TestWeightSource.ToBf16(values[i]);
    }

    private float[] K(float[] values) => Bf16KvCache && Bf16KvOnlyKeys != false ? values.Select(TestWeightSource.ToBf16).ToArray() : values;

    private float[] V(float[] values) => Bf16KvCache && Bf16KvOnlyKeys != true ? values.Select(TestWeightSource.ToBf16).ToArray() : values;

    private float[] State(float[] values) => Bf16States ? values.Select(TestWeightSource.ToBf16).ToArray() : values;

    private float[] _prefillStates = [];

    /// <summary>lm_head's output for prompt row <paramref name="row"/> of the last <see cref="Prefill"/>.</summary>
    public float[] PrefillRow(int row)
    {
        int h = _model.Config.HiddenSize;
        return Head(_prefillStates.AsSpan(row * h, h).ToArray());
    }

    /// <summary>The hidden state lm_head got last (after the last block), [H].</summary>
    public float[] LastHidden { get; private set; } = [];

    public IReadOnlyDictionary<string, float[]> Run(string piece, Dictionary<string, float[]> inputs)
    {
        if (!_interpreters.TryGetValue(piece, out var interpreter))
            _interpreters[piece] = interpreter = new GraphInterpreter(PieceGraphBuilder.Build(_model, _model.Piece(piece)), _weights)
            {
                AfterOp = (op, output, values) =>
                {
                    if (op.Kind == "top.TopK" && output == 1) ChosenExperts.Add((piece, values.Select(v => (int)v).ToArray()));
                    if (Bf16EveryOp) RoundInPlace(values);
                    Observe?.Invoke(piece, op, output, values);
                },
            };
        return interpreter.Run(inputs);
    }

    /// <summary>Prefills the prompt with block_i (it must fit the prefill length); returns lm_head's output.</summary>
    public float[] Prefill(int[] ids)
    {
        int len = _model.PrefillLength, h = _model.Config.HiddenSize;
        if (ids.Length > len) throw new ArgumentException("prompt longer than the prefill net");
        var idInput = new float[len];
        for (int i = 0; i < ids.Length; i++) idInput[i] = ids[i];
        float[] x = State(Run("embedding", new() { ["input_ids"] = idInput })["embedding"]);
        var positions = Enumerable.Range(0, len).Select(i => (float)i).ToArray();
        float[] mask = CausalMask(len, len, 0);
        for (int layer = 0; layer < _model.Config.NumLayers; layer++)
        {
            var o = Run($"block_{layer}", new() { ["input_states"] = x, ["position_ids"] = positions, ["attention_mask"] = mask });
            x = State(o["output_states"]);
            Array.Copy(K(o["k_cache"]), 0, _k[layer], 0, ids.Length * _kvRow);
            Array.Copy(V(o["v_cache"]), 0, _v[layer], 0, ids.Length * _kvRow);
        }
        Length = ids.Length;
        _prefillStates = x;
        return Head(x.AsSpan((ids.Length - 1) * h, h).ToArray());
    }

    /// <summary>Runs one token through embedding_cache and block_cache_i; returns lm_head's output.</summary>
    public float[] Decode(int id)
    {
        int s = _model.SeqLength;
        float[] x = State(Run("embedding_cache", new() { ["input_ids"] = [id] })["embedding_cache"]);
        var mask = new float[s + 1];
        for (int j = Length; j < s; j++) mask[j] = NetContract.MaskFill;
        for (int layer = 0; layer < _model.Config.NumLayers; layer++)
        {
            var o = Run($"block_cache_{layer}", new()
            {
                ["input_states"] = x, ["position_ids"] = [Length], ["attention_mask"] = mask,
                ["history_k"] = _k[layer], ["history_v"] = _v[layer],
            });
            x = State(o["output_states"]);
            Array.Copy(K(o["k_cache"]), 0, _k[layer], Length * _kvRow, _kvRow);
            Array.Copy(V(o["v_cache"]), 0, _v[layer], Length * _kvRow, _kvRow);
        }
        Length++;
        return Head(x);
    }

    private float[] Head(float[] hidden)
    {
        LastHidden = hidden;
        var o = Run("lm_head", new() { ["hidden_states"] = hidden });
        return o.Values.Single();
    }

    /// <summary>[1,1,rows,keys] additive mask: query i sees keys j ≤ i + offset.</summary>
    public static float[] CausalMask(int rows, int keys, int offset)
    {
        var m = new float[rows * keys];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < keys; j++) m[i * keys + j] = j <= i + offset ? 0 : NetContract.MaskFill;
        return m;
    }

    public static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return dot / Math.Sqrt(na * nb);
    }
}
