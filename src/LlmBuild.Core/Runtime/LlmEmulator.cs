using LlmBuild.Core.BModel;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;

namespace LlmBuild.Core.Runtime;

/// <summary>What one prefill or decode call produced, net by net (for verification), as f32 [tokens, …].</summary>
public sealed class EmulatorTrace
{
    /// <summary>embedding output for the new tokens, [n, H].</summary>
    public float[] Embeddings { get; set; } = [];
    /// <summary>Per layer: the block's output_states for the new tokens, [n, H].</summary>
    public List<float[]> BlockOutputs { get; } = [];
    /// <summary>Per layer: the new tokens' keys and values, [n, kvh, d].</summary>
    public List<float[]> Keys { get; } = [];
    public List<float[]> Values { get; } = [];
}

/// <summary>
/// Drives a built LLM through the emulator exactly per the net contract (DESIGN §7), as LLM-TPU's board pipeline does:
/// prefill = embedding → block_0..block_{n−1} (input padded to L, causal mask, positions 0..) → lm_head on the last
/// real row, the blocks' k/v copied into the KV cache; decode = embedding_cache → block_cache_i (history_k/v bound to
/// the KV cache in device memory, mask over the filled history plus the new token) → lm_head, the new k/v written at
/// the token's position. Logits come from lm_head's output (DoSample) or from its logits tensor before the TopK.
/// </summary>
public sealed class LlmEmulator : IDisposable
{
    private readonly EmulatorRuntime _rt;
    private readonly EmulatorNet _embedding, _embeddingCache, _lmHead;
    private readonly EmulatorNet[] _blocks, _blockCaches;
    private readonly DeviceMem[] _keyCache, _valueCache;
    private readonly long _kvRowBytes;

    private LlmEmulator(EmulatorRuntime rt, int layers)
    {
        _rt = rt;
        NumLayers = layers;
        _embedding = rt.Net("embedding");
        _embeddingCache = rt.Net("embedding_cache");
        _lmHead = rt.Net("lm_head");
        _blocks = Enumerable.Range(0, layers).Select(i => rt.Net($"block_{i}")).ToArray();
        _blockCaches = Enumerable.Range(0, layers).Select(i => rt.Net($"block_cache_{i}")).ToArray();
        NetTensor ids = _embedding.Inputs[0];
        PrefillLength = (int)ids.Shape[^1];
        NetTensor hidden = _embedding.Outputs[0];
        HiddenSize = (int)hidden.Shape[^1];
        ActivationType = hidden.DType;
        NetTensor history = _blockCaches[0].Inputs[_blockCaches[0].InputIndex("history_k")];
        SeqLength = (int)history.Shape[1];
        KvHeads = (int)history.Shape[2];
        HeadDim = (int)history.Shape[3];
        if (_blockCaches[0].Inputs[0].Shape[0] != 1)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, "The emulator pipeline runs batch-1 models; this model was built with Batch > 1.");
        _kvRowBytes = (long)KvHeads * HeadDim * TensorRef.ElementSize(history.DType);
        _keyCache = new DeviceMem[layers];
        _valueCache = new DeviceMem[layers];
        for (int i = 0; i < layers; i++)
        {
            _keyCache[i] = rt.Allocate(history.Bytes);
            _valueCache[i] = rt.Allocate(history.Bytes);
        }
        LmHeadOutputsLogits = _lmHead.Outputs[0].DType == BModelDataType.Float32 && _lmHead.Outputs[0].Shape[^1] > 1;
        VocabSize = LmHeadOutputsLogits ? (int)_lmHead.Outputs[0].Shape[^1]
            : (int)_lmHead.Program.Probes.First(p => p.Name == "logits").Tensor.Shape[^1];
    }

    /// <summary>Loads a combined bmodel (config/ is not needed to compute; the CLI reads it for tokenizing).</summary>
    public static LlmEmulator Load(string bmodelPath)
    {
        BModelFile model = EmulatorRuntime.ReadModel(bmodelPath);
        int layers = 0;
        while (model.Nets.Any(n => n.Name == $"block_{layers}")) layers++;
        if (layers == 0 || model.Nets.All(n => n.Name != "embedding"))
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"'{bmodelPath}' has no embedding/block_0 nets; it is not an LLM built by LlmBuild.", bmodelPath);
        NetInfo cache = model.Nets.First(n => n.Name == "block_cache_0");
        BModelTensor history = cache.Stages[0].InputTensors.First(t => t.Name == "history_k");
        long kv = 2L * layers * (long)history.Size + 64L * 1024 * 2 * layers;
        var rt = EmulatorRuntime.Load(bmodelPath, kv);
        try { return new LlmEmulator(rt, layers); }
        catch { rt.Dispose(); throw; }
    }

    public EmulatorRuntime Runtime => _rt;
    public int NumLayers { get; }
    /// <summary>L: tokens the prefill nets take at once.</summary>
    public int PrefillLength { get; }
    /// <summary>S: KV cache rows.</summary>
    public int SeqLength { get; }
    public int HiddenSize { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int VocabSize { get; }
    public BModelDataType ActivationType { get; }
    public bool LmHeadOutputsLogits { get; }
    /// <summary>Tokens in the KV cache (the position of the next token).</summary>
    public int Position { get; private set; }

    public void Reset() => Position = 0;

    private float MaskFill => PieceGraphBuilder.MaskFill;

    /// <summary>
    /// Prefills a prompt (at most L tokens) from position 0 and returns the logits of the last token, or of every
    /// token ([n, vocab]) with <paramref name="allPositions"/>.
    /// </summary>
    public float[] Prefill(ReadOnlySpan<int> ids, bool allPositions = false, EmulatorTrace? trace = null)
    {
        int n = ids.Length, L = PrefillLength;
        if (n == 0 || n > L)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"A prefill takes 1..{L} tokens (MaxInputLength), got {n}.");
        CheckIds(ids);
        Position = 0;
        var padded = new int[L];
        ids.CopyTo(padded);
        _rt.Memory.Write(_embedding.InputMems[0], (ReadOnlySpan<int>)padded);
        _rt.Launch(_embedding);
        DeviceMem hidden = _embedding.OutputMems[0];
        if (trace is not null) trace.Embeddings = ReadRows(hidden, n, HiddenSize);

        var positions = new int[L];
        for (int i = 0; i < n; i++) positions[i] = i;
        var mask = new float[L * L];
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++)
                mask[i * L + j] = i < n && j <= i ? 0f : MaskFill;
        for (int layer = 0; layer < NumLayers; layer++)
        {
            EmulatorNet net = _blocks[layer];
            WriteInput(net, "position_ids", positions);
            if (HasInput(net, "attention_mask")) WriteInputFloat(net, "attention_mask", mask);
            var inputs = new DeviceMem?[net.Inputs.Count];
            inputs[net.InputIndex("input_states")] = hidden;
            _rt.Launch(net, inputs);
            hidden = net.OutputMems[0];
            DeviceMem k = net.OutputMems[1], v = net.OutputMems[2];
            long rows = Math.Min(L, SeqLength);
            _rt.Memory.Copy(_keyCache[layer], k, rows * _kvRowBytes);
            _rt.Memory.Copy(_valueCache[layer], v, rows * _kvRowBytes);
            if (trace is not null)
            {
                trace.BlockOutputs.Add(ReadRows(hidden, n, HiddenSize));
                trace.Keys.Add(ReadRows(k, n, KvHeads * HeadDim));
                trace.Values.Add(ReadRows(v, n, KvHeads * HeadDim));
            }
        }
        Position = n;
        if (!allPositions) return LmHead(hidden, n - 1);
        var all = new float[(long)n * VocabSize];
        for (int i = 0; i < n; i++) LmHead(hidden, i).CopyTo(all.AsSpan(i * VocabSize));
        return all;
    }

    /// <summary>Runs one token at <see cref="Position"/> through the decode nets and returns its logits.</summary>
    public float[] Decode(int id, EmulatorTrace? trace = null)
    {
        if (Position >= SeqLength)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"The KV cache is full: the model was built with SeqLength={SeqLength}.");
        CheckIds([id]);
        _rt.Memory.Write(_embeddingCache.InputMems[0], (ReadOnlySpan<int>)[id]);
        _rt.Launch(_embeddingCache);
        DeviceMem hidden = _embeddingCache.OutputMems[0];
        if (trace is not null) trace.Embeddings = ReadRows(hidden, 1, HiddenSize);
        int S = SeqLength;
        var mask = new float[S + 1];
        for (int j = 0; j < S; j++) mask[j] = j < Position ? 0f : MaskFill;
        for (int layer = 0; layer < NumLayers; layer++)
        {
            EmulatorNet net = _blockCaches[layer];
            WriteInput(net, "position_ids", [Position]);
            WriteInputFloat(net, "attention_mask", mask);
            var inputs = new DeviceMem?[net.Inputs.Count];
            inputs[net.InputIndex("input_states")] = hidden;
            inputs[net.InputIndex("history_k")] = _keyCache[layer];
            inputs[net.InputIndex("history_v")] = _valueCache[layer];
            _rt.Launch(net, inputs);
            hidden = net.OutputMems[0];
            DeviceMem k = net.OutputMems[1], v = net.OutputMems[2];
            _rt.Memory.Copy(_keyCache[layer].Slice(Position * _kvRowBytes, _kvRowBytes), k, _kvRowBytes);
            _rt.Memory.Copy(_valueCache[layer].Slice(Position * _kvRowBytes, _kvRowBytes), v, _kvRowBytes);
            if (trace is not null)
            {
                trace.BlockOutputs.Add(ReadRows(hidden, 1, HiddenSize));
                trace.Keys.Add(ReadRows(k, 1, KvHeads * HeadDim));
                trace.Values.Add(ReadRows(v, 1, KvHeads * HeadDim));
            }
        }
        Position++;
        return LmHead(hidden, 0);
    }

    /// <summary>
    /// Teacher-forced logits of <paramref name="ids"/> from position 0: prefill of the first min(n, L) tokens, then
    /// decode for the rest. Returns [n, vocab] with <paramref name="allPositions"/>, else the last position's [vocab].
    /// </summary>
    public float[] TeacherForced(ReadOnlySpan<int> ids, bool allPositions)
    {
        int first = Math.Min(ids.Length, PrefillLength);
        float[] prefill = Prefill(ids[..first], allPositions);
        if (first == ids.Length) return prefill;
        var all = allPositions ? new List<float[]> { prefill } : null;
        float[] last = prefill;
        for (int i = first; i < ids.Length; i++)
        {
            last = Decode(ids[i]);
            all?.Add(last);
        }
        return all is null ? last : all.SelectMany(a => a).ToArray();
    }

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    private float[] LmHead(DeviceMem hidden, int row)
    {
        long rowBytes = (long)HiddenSize * TensorRef.ElementSize(ActivationType);
        DeviceMem input = _lmHead.InputMems[0];
        _rt.Memory.Copy(input, hidden.Slice(row * rowBytes, rowBytes), rowBytes);
        _rt.Launch(_lmHead);
        return LmHeadOutputsLogits
            ? _rt.ReadFloat(_lmHead.OutputMems[0], BModelDataType.Float32, VocabSize)
            : _rt.ReadProbe(_lmHead, "logits");
    }

    private void CheckIds(ReadOnlySpan<int> ids)
    {
        int vocab = (int)_embedding.Coeff.Size > 0 ? VocabSize : int.MaxValue;
        foreach (int id in ids)
            if (id < 0 || id >= vocab)
                throw new LlmBuildException(ErrorCodes.BadTokenIds, $"Token id {id} is outside the vocabulary 0..{vocab - 1}.");
    }

    private static bool HasInput(EmulatorNet net, string name) => net.Inputs.Any(t => t.Name == name);

    private void WriteInput(EmulatorNet net, string name, int[] values) =>
        _rt.Memory.Write(net.InputMems[net.InputIndex(name)], (ReadOnlySpan<int>)values);

    private void WriteInputFloat(EmulatorNet net, string name, float[] values)
    {
        int i = net.InputIndex(name);
        _rt.WriteFloat(net.InputMems[i], net.Inputs[i].DType, values);
    }

    private float[] ReadRows(DeviceMem mem, int rows, int width) => _rt.ReadFloat(mem, ActivationType, (long)rows * width);

    public void Dispose() => _rt.Dispose();
}
