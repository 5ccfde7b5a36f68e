using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Chips;

/// <summary>
/// What the built-in backend needs to know about a chip (DESIGN §10): its lanes and local memory (recorded, they bound
/// the tile sizes a silicon backend would use), the byte alignment of weights and activations in device memory, the
/// dtypes its matrix unit takes, its cores, and the device memory of a typical board (the budget default).
/// </summary>
public sealed record ChipProfile
{
    public required string Name { get; init; }
    /// <summary>The bmodel <c>chip</c> field: the vendor name plus <see cref="EmulatorSuffix"/> so a board runtime refuses it.</summary>
    public required string BModelChip { get; init; }
    public required int NpuNum { get; init; }
    public required int LocalMemPerLaneBytes { get; init; }
    /// <summary>Bytes one execution unit processes per cycle (the vector width).</summary>
    public required int EuBytes { get; init; }
    public required int MaxCores { get; init; }
    public required int FrequencyMHz { get; init; }
    /// <summary>Alignment of every weight and activation address in device memory.</summary>
    public required int Alignment { get; init; }
    /// <summary>Device memory of a typical board, the default budget of the fit check.</summary>
    public required int DefaultDeviceMemoryMiB { get; init; }
    /// <summary>True when device addresses carry a region tag in their high bits (BM1688 family).</summary>
    public required bool TaggedAddresses { get; init; }
    public required IReadOnlyList<GraphDType> ActivationDTypes { get; init; }
    /// <summary>Weight-only quantization widths the matrix unit supports.</summary>
    public required IReadOnlyList<int> WeightBits { get; init; }
    /// <summary>True when the chip's boards carry one chip, so a model cannot be split across devices.</summary>
    public bool SingleDevice { get; init; }

    public const string EmulatorSuffix = "-EMU";

    public static readonly ChipProfile BM1684X = new()
    {
        Name = "bm1684x", BModelChip = "BM1684X" + EmulatorSuffix, NpuNum = 64, LocalMemPerLaneBytes = 256 * 1024, EuBytes = 64,
        MaxCores = 1, FrequencyMHz = 1000, Alignment = 4096, DefaultDeviceMemoryMiB = 12 * 1024, TaggedAddresses = false,
        ActivationDTypes = [GraphDType.BF16, GraphDType.F16, GraphDType.F32], WeightBits = [4, 8, 16],
    };

    public static readonly ChipProfile BM1688 = new()
    {
        Name = "bm1688", BModelChip = "BM1688" + EmulatorSuffix, NpuNum = 32, LocalMemPerLaneBytes = 128 * 1024, EuBytes = 16,
        MaxCores = 2, FrequencyMHz = 1000, Alignment = 64, DefaultDeviceMemoryMiB = 4 * 1024, TaggedAddresses = true,
        ActivationDTypes = [GraphDType.BF16, GraphDType.F16, GraphDType.F32], WeightBits = [4, 8, 16],
    };

    public static readonly ChipProfile CV186X = new()
    {
        Name = "cv186x", BModelChip = "CV186X" + EmulatorSuffix, NpuNum = 32, LocalMemPerLaneBytes = 128 * 1024, EuBytes = 16,
        MaxCores = 1, FrequencyMHz = 900, Alignment = 64, DefaultDeviceMemoryMiB = 4 * 1024, TaggedAddresses = true,
        ActivationDTypes = [GraphDType.BF16, GraphDType.F16, GraphDType.F32], WeightBits = [4, 8, 16], SingleDevice = true,
    };

    /// <summary>
    /// BM1690. Lanes (NPU_NUM 64), vector width (EU_BYTES 64), local memory (LMEM_BYTES 256 KiB per lane), the 4 KiB
    /// ALIGNMENT and tagged global addresses (SUPPORT_MEM_TAG, weight/activation tags in bits 40+) are TPU-MLIR's
    /// include/tpu_mlir/Backend/BM168x/BM1690.h; 8 cores is the default num_core llm_convert's LlmConverter.get_core_num
    /// gives it. No public source gives its clock or its boards' device memory: the frequency is recorded as 1000 MHz
    /// (like BM1684X, unused by the emulator) and the budget default is a conservative 16 GiB (set DeviceMemoryMiB).
    /// </summary>
    public static readonly ChipProfile BM1690 = new()
    {
        Name = "bm1690", BModelChip = "BM1690" + EmulatorSuffix, NpuNum = 64, LocalMemPerLaneBytes = 256 * 1024, EuBytes = 64,
        MaxCores = 8, FrequencyMHz = 1000, Alignment = 4096, DefaultDeviceMemoryMiB = 16 * 1024, TaggedAddresses = true,
        ActivationDTypes = [GraphDType.BF16, GraphDType.F16, GraphDType.F32], WeightBits = [4, 8, 16],
    };

    /// <summary>
    /// BM1684X2. NPU_NUM 16, EU_BYTES 32, LMEM_BYTES 256 KiB per lane, ALIGNMENT 4 KiB and tagged addresses (weight,
    /// activation and io_alone tags) are TPU-MLIR's include/tpu_mlir/Backend/BM168x/BM1684X2.h; 4 cores is LlmConverter's
    /// get_core_num default for it. No public source gives its clock or device memory: 1000 MHz is recorded and the
    /// budget default is a conservative 4 GiB, BM1688's figure (set DeviceMemoryMiB for the real board).
    /// </summary>
    public static readonly ChipProfile BM1684X2 = new()
    {
        Name = "bm1684x2", BModelChip = "BM1684X2" + EmulatorSuffix, NpuNum = 16, LocalMemPerLaneBytes = 256 * 1024, EuBytes = 32,
        MaxCores = 4, FrequencyMHz = 1000, Alignment = 4096, DefaultDeviceMemoryMiB = 4 * 1024, TaggedAddresses = true,
        ActivationDTypes = [GraphDType.BF16, GraphDType.F16, GraphDType.F32], WeightBits = [4, 8, 16],
    };

    /// <summary>Every chip LlmBuild targets, the default first: the Chip option's values come from this list (llm_convert's order).</summary>
    public static IReadOnlyList<ChipProfile> All { get; } = [BM1684X, BM1688, CV186X, BM1690, BM1684X2];

    public static ChipProfile Get(string name) =>
        All.FirstOrDefault(c => string.Equals(c.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new LlmBuildException(ErrorCodes.UnsupportedChip,
            $"Chip '{name}' has no built-in backend. Supported: {string.Join(", ", All.Select(c => c.Name))}.");

    /// <summary>The profile whose bmodel chip field is <paramref name="bmodelChip"/> (an emulator target), or null.</summary>
    public static ChipProfile? FromBModelChip(string bmodelChip) =>
        All.FirstOrDefault(c => string.Equals(c.BModelChip, bmodelChip, StringComparison.Ordinal));

    /// <summary>Device-memory budget in bytes: the project's DeviceMemoryMiB, or this chip's default when 0.</summary>
    public long DeviceMemoryBytes(int deviceMemoryMiB) => (long)(deviceMemoryMiB > 0 ? deviceMemoryMiB : DefaultDeviceMemoryMiB) * 1024 * 1024;

    /// <summary>Rounds up to the alignment; saturates at long.MaxValue (an absurd size must stay absurd, not wrap negative).</summary>
    public long AlignUp(long value) => value > long.MaxValue - Alignment ? long.MaxValue : (value + Alignment - 1) / Alignment * Alignment;
}
