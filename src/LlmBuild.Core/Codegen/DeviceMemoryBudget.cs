using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Pipeline;

namespace LlmBuild.Core.Codegen;

/// <summary>
/// What a built model needs in device memory per device: every weight owner's coefficients (packed as the chip stores
/// them), the KV cache of every layer, and the largest net's activations and I/O. Checked at codegen against
/// DeviceMemoryMiB (or the chip's default) so an oversized model fails the build with the numbers, not the board.
/// </summary>
public sealed record DeviceMemoryBudget(long WeightBytes, long KvCacheBytes, long ActivationBytes, long BudgetBytes, string ActivationPiece)
{
    public long TotalBytes => WeightBytes + KvCacheBytes + ActivationBytes;

    public static DeviceMemoryBudget Compute(ResolvedModel model, ChipProfile chip, long activationBytes, string activationPiece)
    {
        int devices = Math.Max(1, model.Options.NumDevice);
        long weights = 0;
        foreach (WeightOwner owner in model.Owners)
            foreach (WeightEntry e in owner.Entries)
                weights += chip.AlignUp(StoredBytes(model, e));
        var cfg = model.Config;
        int actBytes = 2; // bf16 or f16 KV
        long kv = 2L * cfg.NumLayers * model.Options.Batch * model.SeqLength * cfg.NumKvHeads * cfg.HeadDim * actBytes;
        // Tensor parallel splits heads and columns across devices; embedding and norms are replicated (close enough for a budget).
        return new DeviceMemoryBudget(weights / devices, kv / devices, activationBytes, chip.DeviceMemoryBytes(model.DeviceMemoryMiB), activationPiece);
    }

    /// <summary>Bytes of one weight entry as stored in coefficient memory.</summary>
    public static long StoredBytes(ResolvedModel model, WeightEntry e)
    {
        long count = e.Shape.Aggregate(1L, (a, b) => a * b);
        switch (e.Storage)
        {
            case WeightStorage.Float32: return count * 4;
            case WeightStorage.Activation: return count * 2;
            default:
            {
                long n = e.Shape[0], k = e.Shape.Length > 1 ? e.Shape[1] : 1;
                long groups = model.Weights.GroupSize > 0 ? k / model.Weights.GroupSize : 1;
                return n * k * model.Weights.Bits / 8 + n * groups * (4 + 1);
            }
        }
    }

    public void Check(ResolvedModel model, ChipProfile chip)
    {
        if (TotalBytes <= BudgetBytes) return;
        string source = model.DeviceMemoryMiB > 0 ? $"DeviceMemoryMiB={model.DeviceMemoryMiB}" : $"the {chip.Name} default of {chip.DefaultDeviceMemoryMiB} MiB";
        throw new LlmBuildException(ErrorCodes.DeviceMemoryOverflow,
            $"Model '{model.Name}' needs {MiB(TotalBytes)} MiB of device memory per device on {chip.Name} " +
            $"(weights {MiB(WeightBytes)} MiB + KV cache {MiB(KvCacheBytes)} MiB for SeqLength={model.SeqLength} + activations {MiB(ActivationBytes)} MiB of {ActivationPiece}), " +
            $"but the budget is {MiB(BudgetBytes)} MiB ({source}). Lower SeqLength, use a lower-bit Quantize mode (e.g. w4bf16), " +
            "use more devices (NumDevice), or set DeviceMemoryMiB to your board's device memory.");
    }

    private static string MiB(long bytes) => (bytes / (1024.0 * 1024.0)).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture);
}
