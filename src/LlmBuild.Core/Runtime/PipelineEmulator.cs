using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Runtime;

/// <summary>
/// Runs a pipeline-parallel package (&lt;name&gt;_pp.tar, DistributeStrategy=pp) across emulated devices, one
/// <see cref="EmulatorRuntime"/> (its own device memory) per stage bmodel: device 0 embeds, each block device runs its
/// layers with their KV cache in its own memory, the last device runs lm_head. Hidden states move between devices as
/// the board's device-to-device copies would (counted in <see cref="TransferredBytes"/>). One sequence (slot 0):
/// prefill of up to L tokens through block_i, then decode through block_cache_i.
/// </summary>
public sealed class PipelineEmulator : IDisposable
{
    private readonly string _extractDir;
    private readonly EmulatorRuntime[] _devices;
    /// <summary>Per layer: the runtime that holds it, its prefill and decode nets, and its K/V cache [S, kvh, d].</summary>
    private readonly (EmulatorRuntime Rt, EmulatorGroup Prefill, EmulatorGroup Decode, DeviceMem K, DeviceMem V, long RowBytes)[] _layers;
    private readonly EmulatorGroup _embedding, _embeddingCache, _lmHead;
    private long _transferred;

    public PipelineManifest Manifest { get; }
    public int PrefillLength { get; }
    public int SeqLength { get; }
    public int HiddenSize { get; }
    public int VocabSize { get; }
    public BModelDataType ActivationType { get; }
    public bool LmHeadOutputsLogits { get; }
    /// <summary>Tokens in the KV cache.</summary>
    public int Position { get; private set; }
    /// <summary>Bytes of hidden states copied between devices so far.</summary>
    public long TransferredBytes => _transferred;
    public int Devices => _devices.Length;

    private PipelineEmulator(string extractDir, PipelineManifest manifest, IReadOnlyList<string> stageFiles, bool verifyWeights)
    {
        _extractDir = extractDir;
        Manifest = manifest;
        _devices = new EmulatorRuntime[stageFiles.Count];
        try
        {
            for (int d = 0; d < stageFiles.Count; d++)
            {
                BModelFile model = EmulatorRuntime.ReadModel(stageFiles[d]);
                // This device's KV cache: as large as the history inputs of its decode nets, plus slack per buffer.
                long history = model.Nets.Where(n => n.Name.StartsWith("block_cache_", StringComparison.Ordinal))
                    .SelectMany(n => n.Stages[0].InputTensors).Where(t => t.Name.StartsWith("history_", StringComparison.Ordinal)).Sum(t => (long)t.Size);
                _devices[d] = EmulatorRuntime.Load(stageFiles[d], checked(2 * history + 4L * 1024 * 1024 + 64L * 1024 * manifest.NumLayers), verifyWeights);
            }
            EmulatorRuntime first = _devices[0], last = _devices[^1];
            _embedding = Find(first, "embedding");
            _embeddingCache = Find(first, "embedding_cache");
            _lmHead = Find(last, "lm_head");
            _layers = new (EmulatorRuntime, EmulatorGroup, EmulatorGroup, DeviceMem, DeviceMem, long)[manifest.NumLayers];
            foreach (var stage in manifest.Stages)
                foreach (int layer in stage.Layers)
                {
                    EmulatorRuntime rt = _devices[stage.Device];
                    EmulatorGroup prefill = Find(rt, $"block_{layer}"), decode = Find(rt, $"block_cache_{layer}");
                    NetTensor history = decode.Input(decode.InputIndex("history_k"));
                    if (history.Shape.Length != 4 || history.Shape[0] != 1)
                        throw new LlmBuildException(ErrorCodes.BadPipelinePackage, $"Net '{decode.Name}' of device {stage.Device} has history_k [{string.Join(", ", history.Shape)}]; a pipeline package decodes one sequence.");
                    _layers[layer] = (rt, prefill, decode, rt.Allocate(history.Bytes), rt.Allocate(history.Bytes), history.Bytes / history.Shape[1]);
                }
            if (_layers.Any(l => l.Rt is null))
                throw new LlmBuildException(ErrorCodes.BadPipelinePackage, $"The manifest of model '{manifest.Model}' does not place every one of its {manifest.NumLayers} layers on a device.");
            NetTensor states = _layers[0].Prefill.Input(_layers[0].Prefill.InputIndex("input_states"));
            PrefillLength = (int)states.Shape[1];
            HiddenSize = (int)states.Shape[^1];
            ActivationType = states.DType;
            SeqLength = (int)_layers[0].Decode.Input(_layers[0].Decode.InputIndex("history_k")).Shape[1];
            NetTensor lmOut = _lmHead.Output(0);
            LmHeadOutputsLogits = lmOut.DType == BModelDataType.Float32 && lmOut.Shape[^1] > 1;
            VocabSize = LmHeadOutputsLogits ? (int)lmOut.Shape[^1]
                : (int)(_lmHead.Steps[0][0].Program.Probes.FirstOrDefault(p => p.Name == "logits")?.Tensor.Shape[^1]
                    ?? throw new LlmBuildException(ErrorCodes.BadPipelinePackage, "Net 'lm_head' keeps no logits tensor; the package is damaged."));
        }
        catch
        {
            foreach (var rt in _devices) rt?.Dispose();
            throw;
        }
    }

    /// <summary>Extracts the package (checking every stage against the manifest) into a scratch folder and loads each stage.</summary>
    public static PipelineEmulator Load(string packagePath, bool verifyWeights = true)
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-pp-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (manifest, files) = PipelinePackage.Extract(packagePath, dir);
            return new PipelineEmulator(dir, manifest, files, verifyWeights);
        }
        catch
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            throw;
        }
    }

    private static EmulatorGroup Find(EmulatorRuntime rt, string name) => rt.HasGroup(name) ? rt.Group(name)
        : throw new LlmBuildException(ErrorCodes.BadPipelinePackage, $"A stage of the pipeline package lacks net '{name}' where its manifest places it.");

    /// <summary>Prefills up to L tokens from position 0; returns the logits of every position ([n, vocab]).</summary>
    public float[] Prefill(ReadOnlySpan<int> ids)
    {
        int n = ids.Length, L = PrefillLength;
        if (n == 0 || n > L) throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"A prefill takes 1..{L} tokens (MaxInputLength), got {n}.");
        var padded = new int[L];
        ids.CopyTo(padded);
        var positions = Enumerable.Range(0, L).Select(i => i < n ? i : 0).ToArray();
        var mask = new float[(long)L * L];
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++) mask[(long)i * L + j] = i < n && j <= i ? 0f : NetContract.MaskFill;
        var (rt, hidden) = Embed(_embedding, padded);
        for (int layer = 0; layer < _layers.Length; layer++)
        {
            var l = _layers[layer];
            (rt, hidden) = (l.Rt, Block(l.Rt, l.Prefill, Move(rt, hidden, l.Rt, l.Prefill), positions, mask, null));
            long rows = Math.Min(L, SeqLength) * l.RowBytes;
            l.Rt.Memory.Copy(l.K, l.Prefill.OutputMem(1), rows);
            l.Rt.Memory.Copy(l.V, l.Prefill.OutputMem(2), rows);
        }
        Position = n;
        var logits = new float[(long)n * VocabSize];
        long rowBytes = (long)HiddenSize * TensorRef.ElementSize(ActivationType);
        for (int i = 0; i < n; i++) Head(rt, hidden.Slice(i * rowBytes, rowBytes)).CopyTo(logits.AsSpan(i * VocabSize));
        return logits;
    }

    /// <summary>Decodes one token at <see cref="Position"/>; returns its logits.</summary>
    public float[] Decode(int id)
    {
        int S = SeqLength;
        if (Position >= S) throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"The KV cache is full: the model was built with SeqLength={S}.");
        var mask = new float[S + 1];
        for (int j = 0; j < S; j++) mask[j] = j < Position ? 0f : NetContract.MaskFill;
        var (rt, hidden) = Embed(_embeddingCache, [id]);
        foreach (var l in _layers)
        {
            (rt, hidden) = (l.Rt, Block(l.Rt, l.Decode, Move(rt, hidden, l.Rt, l.Decode), [Position], mask, l));
            l.Rt.Memory.Copy(l.K.Slice(Position * l.RowBytes, l.RowBytes), l.Decode.OutputMem(1), l.RowBytes);
            l.Rt.Memory.Copy(l.V.Slice(Position * l.RowBytes, l.RowBytes), l.Decode.OutputMem(2), l.RowBytes);
        }
        Position++;
        return Head(rt, hidden);
    }

    private (EmulatorRuntime, DeviceMem) Embed(EmulatorGroup net, int[] ids)
    {
        EmulatorRuntime rt = _devices[0];
        rt.Memory.Write(net.InputMem(0), (ReadOnlySpan<int>)ids);
        rt.Launch(net);
        return (rt, net.OutputMem(0));
    }

    /// <summary>The hidden states as <paramref name="to"/>'s net input: the same buffer on one device, else a device-to-device copy.</summary>
    private DeviceMem Move(EmulatorRuntime from, DeviceMem states, EmulatorRuntime to, EmulatorGroup net)
    {
        if (ReferenceEquals(from, to)) return states;
        DeviceMem target = net.InputMem(net.InputIndex("input_states"));
        long bytes = net.Input(net.InputIndex("input_states")).Bytes;
        from.Memory.Bytes(states)[..checked((int)bytes)].CopyTo(to.Memory.Bytes(target));
        _transferred += bytes;
        return target;
    }

    private static DeviceMem Block(EmulatorRuntime rt, EmulatorGroup net, DeviceMem states, int[] positions, float[] mask,
        (EmulatorRuntime Rt, EmulatorGroup Prefill, EmulatorGroup Decode, DeviceMem K, DeviceMem V, long RowBytes)? cache)
    {
        rt.Memory.Write(net.InputMem(net.InputIndex("position_ids")), (ReadOnlySpan<int>)positions);
        if (net.HasInput("attention_mask"))
        {
            int m = net.InputIndex("attention_mask");
            rt.WriteFloat(net.InputMem(m), net.Input(m).DType, mask);
        }
        int s = net.InputIndex("input_states"), k = cache is null ? -1 : net.InputIndex("history_k"), v = cache is null ? -1 : net.InputIndex("history_v");
        rt.Launch(net, (i, _) => i == s ? states : i == k ? cache!.Value.K : i == v ? cache!.Value.V : null);
        return net.OutputMem(0);
    }

    /// <summary>lm_head on the last device for one row of hidden states.</summary>
    private float[] Head(EmulatorRuntime from, DeviceMem row)
    {
        EmulatorRuntime rt = _devices[^1];
        DeviceMem input = _lmHead.InputMem(0);
        long bytes = _lmHead.Input(0).Bytes;
        from.Memory.Bytes(row)[..checked((int)bytes)].CopyTo(rt.Memory.Bytes(input));
        _transferred += bytes;
        rt.Launch(_lmHead);
        return LmHeadOutputsLogits ? rt.ReadFloat(_lmHead.OutputMem(0), BModelDataType.Float32, VocabSize)
            : rt.ReadProbe(_lmHead.Steps[0][0], "logits").AsSpan(0, VocabSize).ToArray();
    }

    public void Dispose()
    {
        foreach (var rt in _devices) rt.Dispose();
        try { Directory.Delete(_extractDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
