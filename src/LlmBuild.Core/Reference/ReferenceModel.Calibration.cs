namespace LlmBuild.Core.Reference;

/// <summary>The input a group of a layer's linears shares: the rows they multiply.</summary>
public enum LinearInput
{
    /// <summary>input_layernorm's output, [n, H]: q_proj, k_proj, v_proj.</summary>
    Attention,
    /// <summary>The attention heads' output, [n, heads·d]: o_proj.</summary>
    AttentionOutput,
    /// <summary>post_attention_layernorm's output, [n, H]: gate_proj, up_proj.</summary>
    Mlp,
    /// <summary>act(gate) · up, [n, intermediate]: down_proj.</summary>
    MlpDown,
}

/// <summary>Sees the rows <paramref name="x"/> [rows, width] a group of linears of <paramref name="layer"/> is about to multiply.</summary>
public delegate void LinearInputObserver(int layer, LinearInput input, float[] x, int rows, int width);

/// <summary>
/// Layer-at-a-time use of the reference forward, for calibration: embed, run one layer over a whole sequence (a fresh
/// prefill from position 0) while an observer sees each linear's input, and apply the head — so a caller can hold
/// the hidden states of one layer for every calibration sequence instead of the whole model's activations. Weights
/// can be replaced (by their dequantized builds) to measure a quantized model with the same code.
/// </summary>
public sealed partial class ReferenceModel
{
    /// <summary>
    /// Runs <paramref name="layer"/> in place over the hidden states <paramref name="h"/> [n, H] of one sequence at
    /// positions 0..n−1 (the layer's KV cache is cleared first), showing <paramref name="observer"/> each linear's input.
    /// The model must be at position 0 (a fresh model or after <see cref="Reset"/>).
    /// </summary>
    public void PrefillLayer(int layer, float[] h, int n, LinearInputObserver? observer)
    {
        if (Position != 0) throw new InvalidOperationException("PrefillLayer runs sequences from position 0; call Reset first.");
        _keyCache[layer].Clear();
        _valueCache[layer].Clear();
        _linearInputs = observer;
        try
        {
            Layer(layer, h, n, null);
        }
        finally
        {
            _linearInputs = null;
            _keyCache[layer].Clear();
            _valueCache[layer].Clear();
        }
    }

    /// <summary>The tensor's f32 values as the forward uses them (read once, then kept when the model keeps weights).</summary>
    public float[] WeightOf(string tensorName) => Weight(tensorName);

    /// <summary>Uses <paramref name="data"/> for <paramref name="tensorName"/> from now on (same element count).</summary>
    public void ReplaceWeight(string tensorName, float[] data)
    {
        if (!_keepWeights) throw new InvalidOperationException("Replacing weights needs a model that keeps its weights.");
        float[] current = Weight(tensorName);
        if (current.Length != data.Length)
            throw new ArgumentException($"'{tensorName}' holds {current.Length} values, not {data.Length}.", nameof(data));
        lock (_weights) _weights[tensorName] = data;
    }

    /// <summary>Drops the weights kept so far (calibration keeps one layer's weights at a time).</summary>
    public void ForgetWeights()
    {
        lock (_weights) _weights.Clear();
    }
}
