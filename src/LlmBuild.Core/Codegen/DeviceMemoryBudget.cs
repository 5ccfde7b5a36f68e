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
    public long TotalBytes => WeightBytes + KvCacheBytes + ActivationBytes;

    /// <param name="activationBytes">The largest ctx + io of the nets checked on this device.</param>
    /// <param name="device">The device (0 .. NumDevice − 1).</param>
    public static DeviceMemoryBudget Compute(ResolvedModel model, ChipProfile chip, long activationBytes, string activationPiece, int device = 0)
    {
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
                weights += chip.AlignUp(split ? ShardBytes(model, e, devices) : StoredBytes(model, e));
        }
        var cfg = model.Config;
        int actBytes = 2; // bf16 or f16 KV
        long kv = 2L * cfg.NumLayers * model.Options.Batch * model.SeqLength * (cfg.NumKvHeads / devices) * cfg.HeadDim * actBytes;
        return new DeviceMemoryBudget(weights, kv, activationBytes, chip.DeviceMemoryBytes(model.DeviceMemoryMiB), activationPiece, device, devices);
    }

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

    private static long Bytes(ResolvedModel model, WeightEntry e, long[] shape)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        switch (e.Storage)
        {
            case WeightStorage.Float32: return count * 4;
            case WeightStorage.Activation: return count * 2;
            default:
            {
                long n = shape[0], k = shape.Length > 1 ? shape[1] : 1;
                long groups = model.Weights.GroupSize > 0 ? k / model.Weights.GroupSize : 1;
                return n * k * model.Weights.Bits / 8 + n * groups * (4 + 1);
            }
        }
    }

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
