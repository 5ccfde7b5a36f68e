using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Runtime;

/// <summary>What one prefill or decode call produced, net by net (for verification), as f32 [tokens, …].</summary>
public sealed class EmulatorTrace
{
    /// <summary>embedding output for the new tokens, [n, H].</summary>
    public float[] Embeddings { get; set; } = [];
    /// <summary>Per layer: the net that ran (block_i, block_kv_i, block_cache_i or a chunked block_cache_i_s).</summary>
    public List<string> Nets { get; } = [];
    /// <summary>Per layer: the block's output_states for the new tokens, [n, H].</summary>
    public List<float[]> BlockOutputs { get; } = [];
    /// <summary>Per layer: the new tokens' keys and values, [n, kvh, d] (all devices' heads, in head order).</summary>
    public List<float[]> Keys { get; } = [];
    public List<float[]> Values { get; } = [];
}

/// <summary>
/// Drives a built LLM through the emulator exactly per the net contract (DESIGN §7), as LLM-TPU's board pipeline does:
/// prefill = embedding → block_0..block_{n−1} (or block_prompt_i with SharePrompt; input padded to L, causal mask,
/// positions 0..) → lm_head on the last real row, the blocks' k/v copied into the KV cache; decode = embedding_cache →
/// block_cache_i (history_k/v bound to the KV cache in device memory, mask over the filled history plus the new token) →
/// lm_head, the new k/v written at the token's position. Logits come from lm_head's output (DoSample) or from its logits
/// tensor before the TopK.
/// <para>EmbeddingDisk models have no embedding nets: tokens are looked up on the host in config/embedding.bin. Models
/// built with Batch B decode B sequences at once: each has a slot of the KV cache, prefilled one at a time. Models built
/// for several devices (NumDevice) run their blocks as cascades: every device holds its heads' share of the KV cache,
/// the hidden states live on every device, and lm_head runs on device 0.</para>
/// </summary>
public sealed class LlmEmulator : IDisposable
{
    private readonly EmulatorRuntime _rt;
    private readonly EmulatorGroup? _embedding, _embeddingCache;
    private readonly HostEmbedding? _hostEmbedding;
    private readonly DeviceMem _hostPrefillRows, _hostDecodeRows;
    private readonly EmulatorGroup _lmHead;
    private readonly EmulatorGroup[] _prefill, _decode;
    /// <summary>block_kv_i (UseHistoryKv, SharePrompt): a prefill segment that attends to the cache's first rows.</summary>
    private readonly EmulatorGroup[]? _prefillKv;
    /// <summary>
    /// ChunkLength's decode nets block_cache_&lt;i&gt;_&lt;s&gt;, ascending by s: [k] = (s, per layer). A decode step runs the
    /// smallest whose s rows hold the cached tokens, else block_cache_i.
    /// </summary>
    private readonly (int Rows, EmulatorGroup[] Nets)[] _decodeSegments;
    /// <summary>[layer][device]: [B, S, kvh/D, d] in the activation dtype.</summary>
    private readonly DeviceMem[][] _keyCache, _valueCache;
    /// <summary>Bytes of one token's keys (or values) on each device.</summary>
    private readonly long[] _kvRowBytes;
    private readonly int[] _positions;
    /// <summary>M-RoPE models: per slot, the rotary position's offset from the cache position after a multimodal prefill.</summary>
    private readonly int[] _ropeDeltas;
    private readonly EmulatorGroup? _vit;

    private LlmEmulator(EmulatorRuntime rt, int layers, string? configDir)
    {
        _rt = rt;
        NumLayers = layers;
        _prefill = Enumerable.Range(0, layers).Select(i => rt.Group(PrefillNetName(rt, i))).ToArray();
        _decode = Enumerable.Range(0, layers).Select(i => rt.Group($"block_cache_{i}")).ToArray();
        _lmHead = rt.Group("lm_head");
        Devices = _prefill[0].Devices;
        if (rt.HasGroup("block_kv_0"))
        {
            _prefillKv = Enumerable.Range(0, layers).Select(i => rt.Group($"block_kv_{i}")).ToArray();
            EmulatorGroup kv = _prefillKv[0];
            RequireRank(kv, "input_states", 3);
            RequireRank(kv, "history_k", 4);
            HistoryPrefillLength = (int)kv.Input(kv.InputIndex("input_states")).Shape[1];
            HistoryLength = (int)kv.Input(kv.InputIndex("history_k")).Shape[1];
        }

        var segments = new List<(int Rows, EmulatorGroup[] Nets)>();
        foreach (string name in rt.GroupNames)
        {
            var m = System.Text.RegularExpressions.Regex.Match(name, "^block_cache_0_([0-9]{1,9})$");
            if (!m.Success) continue;
            int rows = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            var nets = Enumerable.Range(0, layers).Select(i => rt.Group($"block_cache_{i}_{rows}")).ToArray();
            RequireRank(nets[0], "history_k", 4);
            if (nets[0].Input(nets[0].InputIndex("history_k")).Shape[1] != rows || nets[0].Input(nets[0].InputIndex("history_k")).Shape[0] != 1)
                throw new LlmBuildException(ErrorCodes.BModelBadTensor,
                    $"Net '{nets[0].Name}' has history_k [{string.Join(", ", nets[0].Input(nets[0].InputIndex("history_k")).Shape)}]; the net contract gives a chunked decode net one sequence of {rows} rows. The bmodel is damaged; rebuild it.");
            segments.Add((rows, nets));
        }
        _decodeSegments = segments.OrderBy(g => g.Rows).ToArray();

        EmulatorGroup first = _prefill[0], cache = _decode[0];
        // The net contract (DESIGN §7) fixes the ranks this reads; a damaged file must not index past them.
        RequireRank(first, "input_states", 3);
        RequireRank(cache, "input_states", 3);
        RequireRank(cache, "history_k", 4);
        NetTensor states = first.Input(first.InputIndex("input_states"));
        PrefillLength = (int)states.Shape[1];
        HiddenSize = (int)states.Shape[^1];
        ActivationType = states.DType;
        Batch = (int)cache.Input(cache.InputIndex("input_states")).Shape[0];
        int historyIndex = cache.InputIndex("history_k");
        SeqLength = (int)cache.Input(historyIndex).Shape[1];
        HeadDim = (int)cache.Input(historyIndex).Shape[3];
        _kvRowBytes = new long[Devices];
        _keyCache = new DeviceMem[layers][];
        _valueCache = new DeviceMem[layers][];
        for (int d = 0; d < Devices; d++)
        {
            NetTensor history = cache.Input(historyIndex, d);
            KvHeads += (int)history.Shape[2];
            _kvRowBytes[d] = history.Shape[2] * history.Shape[3] * TensorRef.ElementSize(history.DType);
        }
        for (int i = 0; i < layers; i++)
        {
            _keyCache[i] = Enumerable.Range(0, Devices).Select(d => rt.Allocate(cache.Input(historyIndex, d).Bytes, d)).ToArray();
            _valueCache[i] = Enumerable.Range(0, Devices).Select(d => rt.Allocate(cache.Input(historyIndex, d).Bytes, d)).ToArray();
        }
        _positions = new int[Batch];
        _ropeDeltas = new int[Batch];
        NetTensor firstPositions = first.Input(first.InputIndex("position_ids"));
        // Prefill nets are batch 1, so position_ids [3, L] can only be M-RoPE's temporal/height/width rows.
        MultimodalRope = firstPositions.Shape.Length == 2 && firstPositions.Shape[0] == 3;
        if (rt.HasGroup(NetContract.Vit.Net)) _vit = rt.Group(NetContract.Vit.Net);

        NetTensor lmOut = _lmHead.Output(0);
        LmHeadOutputsLogits = lmOut.DType == BModelDataType.Float32 && lmOut.Shape[^1] > 1;
        VocabSize = LmHeadOutputsLogits ? (int)lmOut.Shape[^1]
            : (int)(_lmHead.Steps[0][0].Program.Probes.FirstOrDefault(p => p.Name == "logits" && p.Tensor.Shape.Length > 0)
                ?? throw new LlmBuildException(ErrorCodes.BModelBadTensor, "Net 'lm_head' keeps no logits tensor, which the net contract's greedy head must; the bmodel is damaged. Rebuild it.")).Tensor.Shape[^1];
        if (PrefillLength > SeqLength || VocabSize < 1)
            throw new LlmBuildException(ErrorCodes.BModelBadTensor,
                $"The nets disagree with the net contract: prefill length {PrefillLength} (block_0 input_states) exceeds SeqLength {SeqLength} (block_cache_0 history_k), or the vocabulary is empty. The bmodel is damaged; rebuild it.");

        if (rt.HasGroup("embedding"))
        {
            _embedding = rt.Group("embedding");
            _embeddingCache = rt.Group("embedding_cache");
        }
        else
        {
            string dir = configDir ?? throw new LlmBuildException(ErrorCodes.RuntimeBadInput,
                "The model has no embedding nets (built with EmbeddingDisk) and no config folder was given for config/embedding.bin.");
            _hostEmbedding = new HostEmbedding(Path.Combine(dir, NetContract.EmbeddingFileName), HiddenSize, ActivationType);
            _hostPrefillRows = rt.Allocate((long)Math.Max(PrefillLength, HistoryPrefillLength) * HiddenSize * TensorRef.ElementSize(ActivationType));
            _hostDecodeRows = rt.Allocate((long)Batch * HiddenSize * TensorRef.ElementSize(ActivationType));
        }
    }

    /// <summary>
    /// Loads a combined bmodel. Only EmbeddingDisk models read anything else: config/embedding.bin from
    /// <paramref name="configDir"/> (default: the config folder beside the bmodel, as the build writes it).
    /// </summary>
    /// <param name="verifyWeights">Check every coefficient blob against its sha256 check code while loading (see
    /// <see cref="EmulatorRuntime.Load"/>); false skips it for a file known to be intact.</param>
    public static LlmEmulator Load(string bmodelPath, string? configDir = null, bool verifyWeights = true)
    {
        KernelWarmup.Start(); // the JIT compiles the kernels on the other core while the coefficients load
        BModelFile model = EmulatorRuntime.ReadModel(bmodelPath);
        bool Has(string name) => model.Nets.Any(n => n.Name == name || n.Cascade?.MainName == name);
        int layers = 0;
        while (Has($"block_{layers}") || Has($"block_prompt_{layers}")) layers++;
        if (layers == 0 || !Has("block_cache_0") || !Has("lm_head"))
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"'{bmodelPath}' has no block_0/block_cache_0/lm_head nets; it is not an LLM built by LlmBuild.", bmodelPath);
        // The KV cache: per layer as large as block_cache's history inputs on every device; a little slack per buffer for alignment.
        long historyBytes = model.Nets.Where(n => n.Name == "block_cache_0" || n.Cascade?.MainName == "block_cache_0")
            .SelectMany(n => n.Stages[0].InputTensors).Where(t => t.Name.StartsWith("history_", StringComparison.Ordinal)).Sum(t => (long)t.Size);
        // Sizes were checked against their shapes, not against each other: a damaged file may still ask for too much, which
        // the runtime refuses with a coded error — so saturate here rather than wrap.
        long extra;
        try
        {
            extra = checked(layers * (historyBytes + 64L * 1024 * 2 * Math.Max(1, model.DeviceNum)) + 4L * 1024 * 1024);
            // EmbeddingDisk: device rows for the host-embedded tokens, as large as any net's input_states.
            extra = checked(extra + 2 * model.Nets.SelectMany(n => n.Stages[0].InputTensors).Where(t => t.Name.StartsWith("input_states", StringComparison.Ordinal)).Select(t => (long)t.Size).DefaultIfEmpty(0).Max());
        }
        catch (OverflowException) { extra = long.MaxValue / 2; }
        var rt = EmulatorRuntime.Load(bmodelPath, extra, verifyWeights);
        try { return new LlmEmulator(rt, layers, configDir ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(bmodelPath))!, "config")); }
        catch { rt.Dispose(); throw; }
    }

    private static void RequireRank(EmulatorGroup net, string input, int rank)
    {
        for (int d = 0; d < net.Devices; d++)
            if (net.Input(net.InputIndex(input), d).Shape.Length != rank)
                throw new LlmBuildException(ErrorCodes.BModelBadTensor,
                    $"Net '{net.Name}' input '{input}' has shape [{string.Join(", ", net.Input(net.InputIndex(input), d).Shape)}]; the net contract gives it {rank} dimensions. The bmodel is damaged; rebuild it.");
    }

    private static string PrefillNetName(EmulatorRuntime rt, int layer) =>
        rt.HasGroup($"block_{layer}") ? $"block_{layer}" : $"block_prompt_{layer}";

    public EmulatorRuntime Runtime => _rt;
    public int NumLayers { get; }
    /// <summary>Devices the blocks run on (NumDevice).</summary>
    public int Devices { get; }
    /// <summary>Sequences the decode nets take at once (Batch).</summary>
    public int Batch { get; }
    /// <summary>L: tokens the prefill nets take at once.</summary>
    public int PrefillLength { get; }
    /// <summary>S: KV cache rows per sequence.</summary>
    public int SeqLength { get; }
    public int HiddenSize { get; }
    /// <summary>KV heads over all devices.</summary>
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int VocabSize { get; }
    public BModelDataType ActivationType { get; }
    public bool LmHeadOutputsLogits { get; }
    /// <summary>True when the model has block_kv nets: <see cref="PrefillWithHistory"/> appends a segment to a prefilled cache.</summary>
    public bool HasHistoryPrefill => _prefillKv is not null;
    /// <summary>Tokens a block_kv call takes, and the cache rows it attends to.</summary>
    public int HistoryPrefillLength { get; }
    public int HistoryLength { get; }
    /// <summary>
    /// The longest prompt <see cref="PrefillChunked"/> takes: L, or with block_kv nets (UseHistoryKv) as many chunks as
    /// the history they attend to allows, within SeqLength.
    /// </summary>
    public int MaxPromptLength => HasHistoryPrefill ? Math.Max(PrefillLength, Math.Min(SeqLength, HistoryLength + HistoryPrefillLength)) : PrefillLength;
    /// <summary>History rows of the chunked decode nets (ChunkLength), ascending; empty without them.</summary>
    public IReadOnlyList<int> DecodeSegments => _decodeSegments.Select(g => g.Rows).ToArray();
    /// <summary>The decode net a step at <paramref name="position"/> cached tokens runs for a layer.</summary>
    public string DecodeNet(int layer, int position) => DecodeNets(position)[layer].Name;
    /// <summary>True when tokens are embedded on the host from config/embedding.bin (EmbeddingDisk).</summary>
    public bool EmbedsOnHost => _hostEmbedding is not null;
    /// <summary>The prefill net of a layer: block_i, or block_prompt_i with SharePrompt.</summary>
    public string PrefillNet(int layer) => _prefill[layer].Name;
    /// <summary>The blocks take 3-component (temporal, height, width) position ids (M-RoPE, vision-language families).</summary>
    public bool MultimodalRope { get; }
    /// <summary>The model has a vit net (images can be encoded).</summary>
    public bool HasVision => _vit is not null;
    /// <summary>The patches one vit run takes (fixed by MaxPixels at build time); 0 without a vit net.</summary>
    public int VitPatches => _vit is null ? 0 : (int)_vit.Input(_vit.InputIndex(NetContract.Vit.Patches)).Shape[0];

    /// <summary>
    /// Runs the vit net on prepared inputs (<see cref="VisionInputs"/>) and returns the image's merged embeddings,
    /// [<see cref="VisionInputs.Tokens"/>, hidden].
    /// </summary>
    public float[] EncodeImage(VisionInputs inputs) =>
        EncodeImage(_rt, _vit ?? throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, "The model has no vit net: it was not built from a vision-language checkpoint."), inputs);

    /// <summary>Runs a vit net loaded in <paramref name="rt"/> on prepared inputs; returns [tokens, hidden].</summary>
    public static float[] EncodeImage(EmulatorRuntime rt, EmulatorGroup vit, VisionInputs inputs)
    {
        void Floats(string name, float[] data) => rt.WriteFloat(vit.InputMem(vit.InputIndex(name)), vit.Input(vit.InputIndex(name)).DType, data);
        void Ints(string name, int[] data) => rt.Memory.Write(vit.InputMem(vit.InputIndex(name)), (ReadOnlySpan<int>)data);
        NetTensor patches = vit.Input(vit.InputIndex(NetContract.Vit.Patches));
        if (inputs.Patches.Length != patches.Shape.Aggregate(1L, (a, b) => a * b))
            throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"The vit net takes {patches.Shape[0]} patches; the inputs were prepared for another size.");
        Floats(NetContract.Vit.Patches, inputs.Patches);
        Ints(NetContract.Vit.PositionIds, inputs.PositionIds);
        Floats(NetContract.Vit.FullMask, inputs.FullMask);
        if (vit.HasInput(NetContract.Vit.WindowMask)) Floats(NetContract.Vit.WindowMask, inputs.WindowMask ?? throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, "The vit net attends in windows; no window mask was prepared."));
        if (vit.HasInput(NetContract.Vit.ReverseIndex)) Ints(NetContract.Vit.ReverseIndex, inputs.ReverseIndex ?? throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, "The vit net attends in windows; no reverse index was prepared."));
        rt.Launch(vit);
        NetTensor output = vit.Output(0);
        int hidden = (int)output.Shape[^1];
        return rt.ReadFloat(vit.OutputMem(0), output.DType, (long)inputs.Tokens * hidden);
    }
    /// <summary>Tokens in slot 0's KV cache (the position of its next token).</summary>
    public int Position => _positions[0];
    /// <summary>Tokens in a slot's KV cache.</summary>
    public int PositionOf(int slot) => _positions[CheckSlot(slot)];

    public void Reset()
    {
        Array.Clear(_positions);
        Array.Clear(_ropeDeltas);
    }

    private static float MaskFill => NetContract.MaskFill;

    /// <summary>
    /// Prefills a prompt (at most L tokens) into a batch slot from position 0 and returns the logits of the last token,
    /// or of every token ([n, vocab]) with <paramref name="allPositions"/>.
    /// </summary>
    public float[] Prefill(ReadOnlySpan<int> ids, bool allPositions = false, EmulatorTrace? trace = null, int slot = 0) =>
        Prefill(ids, null, null, -1, allPositions, trace, slot);

    /// <summary>
    /// A multimodal prefill (M-RoPE models): <paramref name="positions"/> are the prompt's 3-component positions
    /// (<see cref="MropePositions"/>), and <paramref name="imageEmbeds"/> ([k, H], from <see cref="EncodeImage"/>) replace
    /// the embeddings of the k tokens equal to <paramref name="imageTokenId"/>, in order. Later decodes continue at cache
    /// position + the positions' rope delta.
    /// </summary>
    public float[] Prefill(ReadOnlySpan<int> ids, MropePositions? positions, float[]? imageEmbeds, int imageTokenId, bool allPositions = false,
        EmulatorTrace? trace = null, int slot = 0)
    {
        int n = ids.Length, L = PrefillLength;
        CheckSlot(slot);
        if (n == 0 || n > L)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"A prefill takes 1..{L} tokens (MaxInputLength), got {n}.");
        if (positions is not null && (!MultimodalRope || positions.Length != n))
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, MultimodalRope ? $"{positions.Length} M-RoPE positions for {n} tokens." : "The model's blocks take 1-D positions, not M-RoPE positions.");
        CheckIds(ids);
        _positions[slot] = 0;
        _ropeDeltas[slot] = positions?.RopeDelta ?? 0;
        var padded = new int[L];
        ids.CopyTo(padded);
        DeviceMem hidden = Embed(padded, _embedding, _hostPrefillRows);
        if (imageEmbeds is not null) SpliceImage(hidden, ids, imageEmbeds, imageTokenId);
        if (trace is not null) trace.Embeddings = ReadRows(hidden, 0, n, HiddenSize);

        var positionIds = new int[MultimodalRope ? 3 * L : L];
        for (int c = 0; c < (MultimodalRope ? 3 : 1); c++)
            for (int i = 0; i < n; i++) positionIds[c * L + i] = positions?.At(c, i) ?? i;
        var mask = new float[L * L];
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++)
                mask[i * L + j] = i < n && j <= i ? 0f : MaskFill;
        DeviceMem[] states = Broadcast(hidden, _prefill[0]);
        long rows = Math.Min(L, SeqLength);
        for (int layer = 0; layer < NumLayers; layer++)
        {
            EmulatorGroup net = _prefill[layer];
            states = RunBlock(net, states, positionIds, net.HasInput("attention_mask") ? mask : null, null, null);
            StoreKv(net, layer, slot, 0, 0, rows);
            if (trace is not null) Trace(trace, net, states[0], 0, n);
        }
        _positions[slot] = n;
        return PrefillLogits(states[0], n, allPositions);
    }

    /// <summary>
    /// Appends a segment (at most <see cref="HistoryPrefillLength"/> tokens) to a slot's prefilled cache through block_kv_i,
    /// which attends to the first <see cref="HistoryLength"/> cache rows; returns the last (or every) token's logits.
    /// </summary>
    public float[] PrefillWithHistory(ReadOnlySpan<int> ids, bool allPositions = false, EmulatorTrace? trace = null, int slot = 0)
    {
        if (_prefillKv is null)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, "The model has no block_kv nets; build it with UseHistoryKv=true or SharePrompt=true.");
        int n = ids.Length, L = HistoryPrefillLength, H = HistoryLength, start = _positions[CheckSlot(slot)];
        if (n == 0 || n > L)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"A block_kv prefill takes 1..{L} tokens, got {n}.");
        if (start == 0 || start > H || start + n > SeqLength)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput,
                $"A block_kv prefill continues a cache of 1..{H} tokens (MaxPrefillKvLength) with room for the segment (SeqLength={SeqLength}); slot {slot} holds {start}.");
        CheckIds(ids);
        var padded = new int[Math.Max(L, PrefillLength)];
        ids.CopyTo(padded);
        DeviceMem hidden = Embed(padded, _embedding, _hostPrefillRows);
        if (trace is not null) trace.Embeddings = ReadRows(hidden, 0, n, HiddenSize);
        var positions = new int[L];
        var mask = new float[L * (H + L)];
        for (int i = 0; i < L; i++)
        {
            positions[i] = i < n ? start + i : 0;
            for (int j = 0; j < H + L; j++)
                mask[i * (H + L) + j] = i < n && (j < H ? j < start : j - H <= i) ? 0f : MaskFill;
        }
        DeviceMem[] states = Broadcast(hidden, _prefillKv[0]);
        for (int layer = 0; layer < NumLayers; layer++)
        {
            EmulatorGroup net = _prefillKv[layer];
            DeviceMem[] History(DeviceMem[][] cache) =>
                Enumerable.Range(0, Devices).Select(d => cache[layer][d].Slice((long)slot * SeqLength * _kvRowBytes[d], H * _kvRowBytes[d])).ToArray();
            states = RunBlock(net, states, positions, net.HasInput("attention_mask") ? mask : null, History(_keyCache), History(_valueCache));
            StoreKv(net, layer, slot, start, 0, n);
            if (trace is not null) Trace(trace, net, states[0], 0, n);
        }
        _positions[slot] = start + n;
        return PrefillLogits(states[0], n, allPositions);
    }

    /// <summary>
    /// Prefills a prompt of any length up to SeqLength in chunks, as the reference's runtime does with UseHistoryKv: the
    /// first <see cref="PrefillLength"/> tokens through block_i, each further chunk of <see cref="HistoryPrefillLength"/>
    /// tokens through block_kv_i over the cache so far. Returns the last (or every) token's logits.
    /// </summary>
    public float[] PrefillChunked(ReadOnlySpan<int> ids, bool allPositions = false, int slot = 0)
    {
        if (ids.Length <= PrefillLength) return Prefill(ids, allPositions, slot: slot);
        if (_prefillKv is null)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput,
                $"A prompt of {ids.Length} tokens is longer than the prefill nets take ({PrefillLength}) and the model has no block_kv nets to continue it; build it with UseHistoryKv=true.");
        if (ids.Length > SeqLength)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"A prompt of {ids.Length} tokens does not fit the KV cache (SeqLength={SeqLength}).");
        var all = allPositions ? new List<float[]>() : null;
        float[] last = Prefill(ids[..PrefillLength], allPositions, slot: slot);
        all?.Add(last);
        for (int at = PrefillLength; at < ids.Length; at += HistoryPrefillLength)
        {
            last = PrefillWithHistory(ids.Slice(at, Math.Min(HistoryPrefillLength, ids.Length - at)), allPositions, slot: slot);
            all?.Add(last);
        }
        return all is null ? last : all.SelectMany(a => a).ToArray();
    }

    /// <summary>Runs one token of one slot at its position through the decode nets (other slots idle) and returns its logits.</summary>
    public float[] Decode(int id, EmulatorTrace? trace = null, int slot = 0)
    {
        CheckSlot(slot);
        var ids = new int[Batch];
        var active = new bool[Batch];
        ids[slot] = id;
        active[slot] = true;
        DecodeCore(ids, active, trace, slot);
        float[] all = ReadLogits(Batch);
        return Batch == 1 && all.Length == VocabSize ? all : all.AsSpan(slot * VocabSize, VocabSize).ToArray();
    }

    /// <summary>Decodes one token for every slot at once (each at its own position); returns [Batch, vocab].</summary>
    public float[] DecodeBatch(ReadOnlySpan<int> ids) => DecodeBatch(ids, Enumerable.Repeat(true, Batch).ToArray());

    /// <summary>
    /// Decodes one token for each active slot in one pass (continuous batching: idle slots keep their cache and
    /// position); returns [Batch, vocab], the idle slots' rows meaningless.
    /// </summary>
    public float[] DecodeBatch(ReadOnlySpan<int> ids, ReadOnlySpan<bool> active)
    {
        var logits = GC.AllocateUninitializedArray<float>(checked(Batch * VocabSize));
        DecodeBatch(ids, active, logits);
        return logits;
    }

    /// <summary>
    /// <see cref="DecodeBatch(ReadOnlySpan{int}, ReadOnlySpan{bool})"/> into the caller's <paramref name="logits"/>
    /// ([Batch, vocab]): a serving loop reuses one buffer instead of taking a new [Batch, vocab] array every step (at
    /// Batch=4 and a 152k vocabulary, 2.4 MB a step that the collector then has to reclaim).
    /// </summary>
    public void DecodeBatch(ReadOnlySpan<int> ids, ReadOnlySpan<bool> active, Span<float> logits)
    {
        if (ids.Length != Batch || active.Length != Batch)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"The model decodes {Batch} sequence(s) at once (Batch); got {ids.Length} ids and {active.Length} flags.");
        if (logits.Length < (long)Batch * VocabSize)
            throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"The logits buffer holds {logits.Length} values; [Batch, vocab] needs {(long)Batch * VocabSize}.");
        DecodeCore(ids.ToArray(), active.ToArray(), null, 0);
        ReadLogits(Batch, logits);
    }

    /// <summary>The smallest chunked decode nets whose history holds <paramref name="position"/> tokens, else block_cache_i.</summary>
    private EmulatorGroup[] DecodeNets(int position)
    {
        foreach (var (rows, nets) in _decodeSegments)
            if (position <= rows) return nets;
        return _decode;
    }

    /// <summary>One decode step of the active slots; the logits stay in the lm_head's output (<see cref="ReadLogits(int)"/>).</summary>
    private void DecodeCore(int[] ids, bool[] active, EmulatorTrace? trace, int traceSlot)
    {
        int B = Batch;
        for (int b = 0; b < B; b++)
            if (active[b] && _positions[b] >= SeqLength)
                throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"The KV cache of slot {b} is full: the model was built with SeqLength={SeqLength}.");
        // Chunked decode nets exist for Batch = 1 only (resolve refuses them with more): history is the cache's first S rows.
        EmulatorGroup[] decode = B == 1 ? DecodeNets(_positions[0]) : _decode;
        int S = decode == _decode ? SeqLength : _decodeSegments.First(g => g.Nets == decode).Rows;
        CheckIds(ids);
        DeviceMem hidden = Embed(ids, _embeddingCache, _hostDecodeRows);
        if (trace is not null) trace.Embeddings = ReadRows(hidden, traceSlot, 1, HiddenSize);
        var positions = new int[MultimodalRope ? 3 : B];
        var mask = new float[B * (S + 1)];
        for (int b = 0; b < B; b++)
        {
            // An idle slot attends to its own token only; its cache is left untouched.
            positions[b] = active[b] ? _positions[b] + _ropeDeltas[b] : 0;
            // M-RoPE (batch 1): text after the prompt has the same position in all three components.
            if (MultimodalRope) positions[1] = positions[2] = positions[0];
            for (int j = 0; j < S; j++) mask[b * (S + 1) + j] = active[b] && j < _positions[b] ? 0f : MaskFill;
        }
        DeviceMem[] states = Broadcast(hidden, decode[0]);
        for (int layer = 0; layer < NumLayers; layer++)
        {
            EmulatorGroup net = decode[layer];
            DeviceMem[] History(DeviceMem[][] cache) => S == SeqLength ? cache[layer]
                : Enumerable.Range(0, Devices).Select(d => cache[layer][d].Slice(0, S * _kvRowBytes[d])).ToArray();
            states = RunBlock(net, states, positions, mask, History(_keyCache), History(_valueCache));
            for (int b = 0; b < B; b++)
                if (active[b]) StoreKv(net, layer, b, _positions[b], b, 1);
            if (trace is not null) Trace(trace, net, states[0], traceSlot, 1);
        }
        for (int b = 0; b < B; b++) if (active[b]) _positions[b]++;
        // lm_head takes [B, H]: the decode states [B, 1, H] as they are.
        _rt.Launch(_lmHead, (i, _) => i == 0 ? states[0] : null);
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

    /// <summary>The greedy token: the first index of the largest logit (see <see cref="Kernels.ArgMax"/>).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits) => Kernels.ArgMax(logits);

    /// <summary>
    /// Copies <paramref name="rows"/> rows of a block's k/v outputs (from row <paramref name="outputRow"/>) into a slot's
    /// KV cache at <paramref name="position"/>, on every device.
    /// </summary>
    private void StoreKv(EmulatorGroup net, int layer, int slot, int position, int outputRow, long rows)
    {
        for (int d = 0; d < Devices; d++)
        {
            long row = _kvRowBytes[d], at = ((long)slot * SeqLength + position) * row;
            _rt.Memory.Copy(_keyCache[layer][d].Slice(at, rows * row), net.OutputMem(1, d).Slice(outputRow * row, rows * row), rows * row);
            _rt.Memory.Copy(_valueCache[layer][d].Slice(at, rows * row), net.OutputMem(2, d).Slice(outputRow * row, rows * row), rows * row);
        }
    }

    /// <summary>Writes the image embeddings over the embedded rows of the image-pad tokens, in order.</summary>
    private void SpliceImage(DeviceMem hidden, ReadOnlySpan<int> ids, float[] imageEmbeds, int imageTokenId)
    {
        long rowBytes = (long)HiddenSize * TensorRef.ElementSize(ActivationType);
        int[] rows = ImageSplice.Rows(ids, imageTokenId, imageEmbeds.Length, HiddenSize);
        for (int i = 0; i < rows.Length; i++)
            _rt.WriteFloat(hidden.Slice(rows[i] * rowBytes, rowBytes), ActivationType, imageEmbeds.AsSpan(i * HiddenSize, HiddenSize));
    }

    /// <summary>The last prefilled token's logits, or every one's ([n, vocab]).</summary>
    private float[] PrefillLogits(DeviceMem states, int n, bool allPositions)
    {
        if (!allPositions) return LmHead(states, n - 1);
        var all = new float[(long)n * VocabSize];
        for (int i = 0; i < n; i++) LmHead(states, i).CopyTo(all.AsSpan(i * VocabSize));
        return all;
    }

    /// <summary>Embeds ids (the net's full input length) through the embedding net, or from embedding.bin into device rows.</summary>
    private DeviceMem Embed(int[] ids, EmulatorGroup? net, DeviceMem hostRows)
    {
        if (net is not null)
        {
            _rt.Memory.Write(net.InputMem(0), (ReadOnlySpan<int>)ids);
            _rt.Launch(net);
            return net.OutputMem(0);
        }
        _hostEmbedding!.Read(ids, _rt.Memory.Bytes(hostRows));
        return hostRows;
    }

    /// <summary>The hidden states on every device: device 0's buffer, copied into the first block's input on the others.</summary>
    private DeviceMem[] Broadcast(DeviceMem hidden, EmulatorGroup firstBlock)
    {
        var states = new DeviceMem[Devices];
        states[0] = hidden;
        int index = firstBlock.InputIndex("input_states");
        for (int d = 1; d < Devices; d++)
        {
            states[d] = firstBlock.InputMem(index, d);
            _rt.Memory.Copy(states[d], hidden, firstBlock.Input(index, d).Bytes);
        }
        return states;
    }

    /// <summary>Runs one block on every device (history_k/v bound per device when it has them); returns its output_states per device.</summary>
    private DeviceMem[] RunBlock(EmulatorGroup net, DeviceMem[] states, int[] positions, float[]? mask, DeviceMem[]? historyK, DeviceMem[]? historyV)
    {
        int statesIndex = net.InputIndex("input_states"), positionIndex = net.InputIndex("position_ids");
        int maskIndex = mask is null ? -1 : net.InputIndex("attention_mask");
        int kIndex = historyK is null ? -1 : net.InputIndex("history_k"), vIndex = historyV is null ? -1 : net.InputIndex("history_v");
        for (int d = 0; d < Devices; d++)
        {
            _rt.Memory.Write(net.InputMem(positionIndex, d), (ReadOnlySpan<int>)positions);
            if (mask is not null) _rt.WriteFloat(net.InputMem(maskIndex, d), net.Input(maskIndex, d).DType, mask);
        }
        _rt.Launch(net, (i, d) =>
            i == statesIndex ? states[d]
            : i == kIndex ? historyK![d]
            : i == vIndex ? historyV![d]
            : null);
        return Enumerable.Range(0, Devices).Select(d => net.OutputMem(0, d)).ToArray();
    }

    private void Trace(EmulatorTrace trace, EmulatorGroup net, DeviceMem output, int firstRow, int rows)
    {
        trace.Nets.Add(net.Name);
        trace.BlockOutputs.Add(ReadRows(output, firstRow, rows, HiddenSize));
        trace.Keys.Add(GatherHeads(net, 1, firstRow, rows));
        trace.Values.Add(GatherHeads(net, 2, firstRow, rows));
    }

    /// <summary>Rows of a k/v output of every device, joined per row in head order: [rows, kvh·d].</summary>
    private float[] GatherHeads(EmulatorGroup net, int output, int firstRow, int rows)
    {
        var parts = Enumerable.Range(0, Devices).Select(d =>
        {
            int width = (int)(_kvRowBytes[d] / TensorRef.ElementSize(ActivationType));
            return (Width: width, Data: ReadRows(net.OutputMem(output, d), firstRow, rows, width));
        }).ToArray();
        int total = parts.Sum(p => p.Width);
        var result = new float[(long)rows * total];
        for (int r = 0; r < rows; r++)
        {
            int at = r * total;
            foreach (var (width, data) in parts)
            {
                data.AsSpan(r * width, width).CopyTo(result.AsSpan(at));
                at += width;
            }
        }
        return result;
    }

    private float[] LmHead(DeviceMem hidden, int row)
    {
        long rowBytes = (long)HiddenSize * TensorRef.ElementSize(ActivationType);
        DeviceMem input = _lmHead.InputMem(0);
        _rt.Memory.Copy(input, hidden.Slice(row * rowBytes, rowBytes), rowBytes);
        _rt.Launch(_lmHead);
        return ReadLogits(1);
    }

    /// <summary>The logits of lm_head's first <paramref name="rows"/> rows: its output (DoSample) or the tensor before its TopK.</summary>
    private float[] ReadLogits(int rows)
    {
        var logits = GC.AllocateUninitializedArray<float>(checked(rows * VocabSize));
        ReadLogits(rows, logits);
        return logits;
    }

    /// <summary>
    /// <see cref="ReadLogits(int)"/> into <paramref name="destination"/>, converted straight from device memory (a
    /// decode step's buffer is not filled from a fresh array).
    /// </summary>
    private void ReadLogits(int rows, Span<float> destination)
    {
        Span<float> logits = destination[..(rows * VocabSize)];
        if (LmHeadOutputsLogits) _rt.ReadFloat(_lmHead.OutputMem(0), BModelDataType.Float32, logits);
        else _rt.ReadProbe(_lmHead.Steps[0][0], "logits", logits);
    }

    private void CheckIds(ReadOnlySpan<int> ids)
    {
        int vocab = _hostEmbedding is null ? VocabSize : Math.Min(VocabSize, _hostEmbedding.Rows);
        foreach (int id in ids)
            if (id < 0 || id >= vocab)
                throw new LlmBuildException(ErrorCodes.BadTokenIds, $"Token id {id} is outside the vocabulary 0..{vocab - 1}.");
    }

    private int CheckSlot(int slot) => slot >= 0 && slot < Batch ? slot
        : throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Batch slot {slot} does not exist: the model decodes {Batch} sequence(s) (slots 0..{Batch - 1}).");

    private float[] ReadRows(DeviceMem mem, int firstRow, int rows, int width)
    {
        long rowBytes = (long)width * TensorRef.ElementSize(ActivationType);
        return _rt.ReadFloat(mem.Slice(firstRow * rowBytes, rows * rowBytes), ActivationType, (long)rows * width);
    }

    public void Dispose()
    {
        _hostEmbedding?.Dispose();
        _rt.Dispose();
    }

    /// <summary>config/embedding.bin: [vocab, H] in the activation dtype, read a row at a time (never loaded whole).</summary>
    private sealed class HostEmbedding : IDisposable
    {
        private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _file;
        private readonly long _rowBytes;

        public HostEmbedding(string path, int hidden, BModelDataType dtype)
        {
            if (!File.Exists(path))
                throw new LlmBuildException(ErrorCodes.RuntimeBadInput,
                    $"The model was built with EmbeddingDisk, so tokens are embedded from '{path}', which does not exist. Keep the build's config/ folder beside the bmodel (or pass its folder).", path);
            _file = File.OpenHandle(path);
            _rowBytes = (long)hidden * TensorRef.ElementSize(dtype);
            long length = RandomAccess.GetLength(_file);
            if (length == 0 || length % _rowBytes != 0)
            {
                _file.Dispose();
                throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"'{path}' has {length} bytes, not a whole number of {_rowBytes}-byte rows of hidden size {hidden}. Rebuild the model.", path);
            }
            Rows = checked((int)(length / _rowBytes));
        }

        public int Rows { get; }

        public void Read(ReadOnlySpan<int> ids, Span<byte> destination)
        {
            for (int i = 0; i < ids.Length; i++)
            {
                Span<byte> row = destination.Slice(checked((int)(i * _rowBytes)), (int)_rowBytes);
                if (RandomAccess.Read(_file, row, ids[i] * _rowBytes) != _rowBytes)
                    throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"embedding.bin ended before row {ids[i]}.");
            }
        }

        public void Dispose() => _file.Dispose();
    }
}
