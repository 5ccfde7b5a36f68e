using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Codegen;

/// <summary>
/// What a built model needs in device memory on one device: its weight owners' coefficients (packed as the chip stores
/// them), the KV cache of every layer, and the largest net's activations and I/O. With tensor parallelism
/// (NumDevice = D &gt; 1, <see cref="TensorParallel"/>) device 0 holds the non-block weights (embedding, lm_head) and its
/// share of every block, each other device only its block shares, and every device the KV of kvh/D heads. Checked at
/// codegen against DeviceMemoryMiB (or the chip's default) so an oversized model fails the build with the numbers, not
/// the board.
/// </summary>
public sealed record DeviceMemoryBudget(long WeightBytes, long KvCacheBytes, long ActivationBytes, long BudgetBytes, string ActivationPiece,
    int Device = 0, int Devices = 1)
{
    public long TotalBytes => Sum(Sum(WeightBytes, KvCacheBytes), ActivationBytes);

    /// <param name="activationBytes">The largest ctx + io of the nets checked on this device.</param>
    /// <param name="device">The device (0 .. NumDevice − 1).</param>
    public static DeviceMemoryBudget Compute(ResolvedModel model, ChipProfile chip, long activationBytes, string activationPiece, int device = 0)
    {
        if (PipelineParallel.IsPipeline(model.Options))
            return ComputeStage(model, chip, PipelineParallel.StageOf(model, activationPiece), activationBytes, activationPiece);
        int devices = TensorParallel.Devices(model);
        if (device < 0 || device >= devices) throw new ArgumentOutOfRangeException(nameof(device), device, $"the model has devices 0..{devices - 1}");
        var blockOwners = model.Pieces.Where(p => TensorParallel.IsBlock(p.Kind) && p.WeightOwner is not null)
            .Select(p => p.WeightOwner!).ToHashSet(StringComparer.Ordinal);
        long weights = 0;
        foreach (WeightOwner owner in model.Owners)
        {
            bool split = devices > 1 && blockOwners.Contains(owner.Name);
            if (!split && device != 0) continue; // unsplit pieces run on device 0
            foreach (WeightEntry e in owner.Entries)
                weights = Sum(weights, chip.AlignUp(split ? ShardBytes(model, e, devices) : StoredBytes(model, e)));
        }
        return new DeviceMemoryBudget(weights, KvCacheBytesPerDevice(model), activationBytes, chip.DeviceMemoryBytes(model.DeviceMemoryMiB), activationPiece, device, devices);
    }

    /// <summary>
    /// One pipeline device (DistributeStrategy=pp): the weight owners of its stage's nets and the KV cache of its layers,
    /// plus <paramref name="activationBytes"/> of its largest net.
    /// </summary>
    public static DeviceMemoryBudget ComputeStage(ResolvedModel model, ChipProfile chip, PipelineStage stage, long activationBytes, string activationPiece)
    {
        long weights = 0;
        foreach (string owner in stage.Pieces.Select(p => model.Piece(p).WeightOwner).OfType<string>().Distinct(StringComparer.Ordinal))
            foreach (WeightEntry e in model.Owner(owner).Entries) weights = Sum(weights, chip.AlignUp(StoredBytes(model, e)));
        long kv = model.Config.NumLayers == 0 ? 0 : KvCacheBytesPerDevice(model) / model.Config.NumLayers * stage.Layers.Count;
        return new DeviceMemoryBudget(weights, kv, activationBytes, chip.DeviceMemoryBytes(model.DeviceMemoryMiB), activationPiece, stage.Device, model.Options.NumDevice);
    }

    /// <summary>
    /// Every device's budget known before any piece is compiled: <see cref="Estimate"/> for one device or tensor
    /// parallelism (device 0 holds the most), one per stage for a pipeline (block devices with a prefill block's io, the
    /// others with their nets' states).
    /// </summary>
    public static IReadOnlyList<DeviceMemoryBudget> EstimateDevices(ResolvedModel model, ChipProfile chip)
    {
        if (!PipelineParallel.IsPipeline(model.Options)) return [Estimate(model, chip)];
        long blockIo = BlockIoBytes(model);
        long act = Models.GraphDTypes.ActivationBytes(model.ActivationDtype);
        long statesIo = Sum(Product(model.PrefillLength, model.Config.HiddenSize, act), Product(model.Config.VocabSize, 4));
        return PipelineParallel.Stages(model).Select(s => ComputeStage(model, chip, s, s.Layers.Count > 0 ? blockIo : statesIo,
            s.Layers.Count > 0 ? $"block_{s.Layers[0]} (inputs and outputs only)" : $"{s.Pieces.FirstOrDefault()} (states only)")).ToArray();
    }

    /// <summary>
    /// The budget of device 0 known before any piece is compiled: its weights and KV cache as <see cref="Compute"/> counts
    /// them, and for activations only the io the net contract fixes for one prefill block (input and output states, the
    /// [L, S] attention mask, position ids, the new k and v, at 2 bytes an element). Compiled nets need at least that, so
    /// a model this refuses would be refused by codegen too — only later, after quantize and export.
    /// </summary>
    public static DeviceMemoryBudget Estimate(ResolvedModel model, ChipProfile chip) =>
        PipelineParallel.IsPipeline(model.Options) ? EstimateDevices(model, chip).MaxBy(b => b.TotalBytes)!
        : SingleDeviceEstimate(model, chip);

    /// <summary>One device or tensor parallelism: a prefill block's io, or the vit's where a vision tower's is larger.</summary>
    private static DeviceMemoryBudget SingleDeviceEstimate(ResolvedModel model, ChipProfile chip)
    {
        long io = BlockIoBytes(model);
        if (model.Config.Vision is { } v && model.VitPatches > 0)
        {
            // vit: patches, position ids, the [N, N] mask(s) in f32, the merged output.
            long n = model.VitPatches;
            long vitIo = Sum(Sum(Sum(Product(n, v.PatchDim, 4), Product(n, 2, 4)), Product(v.UsesWindows ? 2 : 1, n, n, 4)), Product(n / v.MergeArea, v.OutHiddenSize, 4));
            if (vitIo > io) return Compute(model, chip, vitIo, "vit (inputs and outputs only)");
        }
        return Compute(model, chip, io, "block_0 (inputs and outputs only)");
    }

    /// <summary>The io the net contract fixes for one prefill block (states, mask, positions, new k and v).</summary>
    private static long BlockIoBytes(ResolvedModel model)
    {
        var cfg = model.Config;
        int devices = TensorParallel.Devices(model);
        long length = model.PrefillLength, keys = model.PrefillLength, batch = model.Options.Batch;
        long act = Models.GraphDTypes.ActivationBytes(model.ActivationDtype);
        long states = Product(batch, length, cfg.HiddenSize, act);
        long mask = model.Options.Dynamic ? 0 : Product(batch, length, keys, act);
        long positions = Product(batch, length, 4);
        long newKv = Product(2, batch, length, cfg.NumKvHeads / devices, cfg.HeadDim, act);
        return Sum(Sum(Sum(Product(2, states), mask), positions), newKv);
    }

    /// <summary>Every layer's K and V cache on one device, for Batch sequences of SeqLength (saturates rather than wraps).</summary>
    private static long KvCacheBytesPerDevice(ResolvedModel model)
    {
        var cfg = model.Config;
        int actBytes = Models.GraphDTypes.ActivationBytes(model.ActivationDtype); // KV in the activation dtype
        return Product(2, cfg.NumLayers, model.Options.Batch, model.SeqLength, cfg.NumKvHeads / TensorParallel.Devices(model), cfg.HeadDim, actBytes);
    }

    /// <summary>A product of sizes; long.MaxValue when it overflows, which no budget admits.</summary>
    internal static long Product(params long[] factors) => WeightBudget.SaturatingProduct(factors);

    private static long Sum(long a, long b) => WeightBudget.SaturatingSum(a, b);

    /// <summary>Bytes of one weight entry as stored in coefficient memory.</summary>
    public static long StoredBytes(ResolvedModel model, WeightEntry e) => Bytes(model, e, e.Shape);

    /// <summary>Bytes of one device's share of a block weight entry (<see cref="TensorParallel.SplitOf"/>).</summary>
    public static long ShardBytes(ResolvedModel model, WeightEntry e, int devices)
    {
        long[] shape = (long[])e.Shape.Clone();
        switch (TensorParallel.SplitOf(e.Role))
        {
            case WeightSplit.OutputRows: shape[0] /= devices; break;
            case WeightSplit.InputColumns: shape[1] /= devices; break;
        }
        return Bytes(model, e, shape);
    }

    /// <summary>The stored bytes of an entry (or one device's shard of it) at its own width: mixed-precision linears and an 8-bit head count at 8 bits.</summary>
    private static long Bytes(ResolvedModel model, WeightEntry e, long[] shape) => model.StoredBytes(e with { Shape = shape });

    public void Check(ResolvedModel model, ChipProfile chip)
    {
        if (TotalBytes <= BudgetBytes) return;
        string source = model.DeviceMemoryMiB > 0 ? $"DeviceMemoryMiB={model.DeviceMemoryMiB}" : $"the {chip.Name} default of {chip.DefaultDeviceMemoryMiB} MiB";
        string where = Devices > 1 ? $"on device {Device} (of NumDevice={Devices})" : "per device";
        throw new LlmBuildException(ErrorCodes.DeviceMemoryOverflow,
            $"Model '{model.Name}' needs {MiB(TotalBytes)} MiB of device memory {where} on {chip.Name} " +
            $"(weights {MiB(WeightBytes)} MiB + KV cache {MiB(KvCacheBytes)} MiB for SeqLength={model.SeqLength} + activations {MiB(ActivationBytes)} MiB of {ActivationPiece}), " +
            $"but the budget is {MiB(BudgetBytes)} MiB ({source}). Lower SeqLength, use a lower-bit Quantize mode (e.g. w4bf16), " +
            "use more devices (NumDevice), or set DeviceMemoryMiB to your board's device memory.");
    }

    private static string MiB(long bytes) => (bytes / (1024.0 * 1024.0)).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture);
}
