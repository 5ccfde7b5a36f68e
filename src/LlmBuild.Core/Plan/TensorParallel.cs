using System.Globalization;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Plan;

/// <summary>How a block weight is divided among tensor-parallel devices.</summary>
public enum WeightSplit
{
    /// <summary>Every device holds all of it (norms; the o_proj bias, added once in the reduce step).</summary>
    Replicated,
    /// <summary>Column-parallel: rows [d·N/D, (d+1)·N/D) of the [N, K] weight and of its bias (q/k/v, gate/up).</summary>
    OutputRows,
    /// <summary>Row-parallel: columns [d·K/D, (d+1)·K/D) of the [N, K] weight; the partial sums are all-reduced (o_proj, down_proj).</summary>
    InputColumns,
}

/// <summary>
/// Tensor parallelism of the built-in backend (NumDevice = D &gt; 1, Megatron style), the contract with the runtime.
/// Only block pieces (block_i, block_prompt_i, block_kv_i, block_cache_i) split; each becomes 3·D nets of one piece
/// bmodel named <c>{piece}_s{step}_d{device}</c>, step-major, each with Cascade {device, step, main name = piece}.
/// Device d owns q heads [d·nh/D, (d+1)·nh/D), kv heads [d·kvh/D, (d+1)·kvh/D) and intermediate columns
/// [d·I/D, (d+1)·I/D).
/// <list type="bullet">
/// <item>Step 0: input_states, position_ids, attention_mask, history_k/v (kvh/D heads) → attn_partial_d (f32), k_cache,
/// v_cache (kvh/D heads): attention of the device's heads and its share of o_proj, without bias.</item>
/// <item>Step 1: input_states, attn_partial_0..D−1 → residual_d, mlp_partial_d (f32): residual = input + Σ partials
/// (+ o_proj bias), post-attention norm and the device's MLP columns, down_proj without bias.</item>
/// <item>Step 2: residual_d, mlp_partial_0..D−1 → output_states = residual + Σ partials (+ the final norm when the block has it).</item>
/// </list>
/// In the bmodel a main-net input/output is named <c>{name}_{d}</c> with Hidden 3 (input) / 4 (output) and Index = its
/// position in the unsplit piece's list; the inter-step tensors keep their names, Hidden 0, f32. The runtime copies a
/// step's hidden inputs from the previous step's outputs of the same name (the emulated all-reduce).
/// </summary>
public static class TensorParallel
{
    public const int Steps = 3;
    /// <summary>bmodel Tensor.hidden of a cascade net's tensor that is an input / output of the main net.</summary>
    public const int HiddenInput = 3, HiddenOutput = 4;

    /// <summary>Devices a block is split across: NumDevice with tensor parallelism; 1 with DistributeStrategy=pp, whose
    /// stages each run whole nets on one device (<see cref="PipelineParallel"/>), as llm_convert sets num_device = 1 for pp.</summary>
    public static int Devices(ResolvedModel model) => PipelineParallel.IsPipeline(model.Options) ? 1 : Math.Max(1, model.Options.NumDevice);

    public static bool IsBlock(PieceKind kind) => kind is PieceKind.Block or PieceKind.BlockPrompt or PieceKind.BlockKv or PieceKind.BlockCache;

    /// <summary>True when the built-in backend splits this piece across devices.</summary>
    public static bool IsSplit(ResolvedModel model, Piece piece) => Devices(model) > 1 && IsBlock(piece.Kind);

    public static string NetName(string piece, int step, int device) =>
        string.Create(CultureInfo.InvariantCulture, $"{piece}_s{step}_d{device}");

    /// <summary>A block's net-contract inputs and outputs (DESIGN §7); any other I/O of a shard is an inter-step tensor.</summary>
    public static readonly IReadOnlyList<string> ContractInputs = ["input_states", "position_ids", "attention_mask", "history_k", "history_v"];
    public static readonly IReadOnlyList<string> ContractOutputs = ["output_states", "k_cache", "v_cache"];

    public static bool IsContractTensor(string name) => ContractInputs.Contains(name) || ContractOutputs.Contains(name);

    public static string AttnPartial(int device) => string.Create(CultureInfo.InvariantCulture, $"attn_partial_{device}");
    public static string Residual(int device) => string.Create(CultureInfo.InvariantCulture, $"residual_{device}");
    public static string MlpPartial(int device) => string.Create(CultureInfo.InvariantCulture, $"mlp_partial_{device}");

    /// <summary>The bmodel name of a main-net input or output on a device: input_states_1, k_cache_0.</summary>
    public static string DeviceTensorName(string contractName, int device) =>
        string.Create(CultureInfo.InvariantCulture, $"{contractName}_{device}");

    /// <summary>The range [Start, Start + Count) of <paramref name="total"/> rows, columns or heads that a device owns.</summary>
    public static (long Start, long Count) Range(long total, int device, int devices)
    {
        if (devices < 1 || device < 0 || device >= devices || total % devices != 0)
            throw new ArgumentException($"{total} cannot be split evenly for device {device} of {devices}.");
        long share = total / devices;
        return (device * share, share);
    }

    public static WeightSplit SplitOf(WeightRole role) => role switch
    {
        WeightRole.QProj or WeightRole.KProj or WeightRole.VProj or WeightRole.MlpGate or WeightRole.MlpUp
            or WeightRole.QBias or WeightRole.KBias or WeightRole.VBias => WeightSplit.OutputRows,
        WeightRole.OProj or WeightRole.MlpDown => WeightSplit.InputColumns,
        _ => WeightSplit.Replicated,
    };

    /// <summary>
    /// Checks that the model splits across NumDevice devices: DistributeStrategy=tp, the heads, kv heads and
    /// intermediate size divisible by D and, for quantized weights, each device's K share of o_proj and down_proj made
    /// of whole groups (and bytes for 4-bit), and none of those act-order permuted. Nothing to check for one device.
    /// </summary>
    public static void Check(ResolvedModel model)
    {
        int devices = Devices(model); // NumDevice ≥ 1 is BuildOptions.Validate's check
        if (devices == 1) return;
        string where = $"model '{model.Name}' ({Path.Combine(model.Options.ModelPath, "config.json")})";
        var cfg = model.Config;
        if (cfg.Moe is not null)
            throw new LlmBuildException(ErrorCodes.MoeTensorParallel,
                $"NumDevice={devices} with the mixture-of-experts model {where}: the built-in backend's tensor parallelism splits attention heads " +
                "and dense MLP columns, not experts. Use NumDevice=1, or the tpu-mlir backend.");
        var dims = new (string Field, int Value)[]
        {
            ("num_attention_heads", cfg.NumHeads), ("num_key_value_heads", cfg.NumKvHeads), ("intermediate_size", cfg.IntermediateSize),
        };
        int common = dims.Aggregate(0, (g, d) => Gcd(g, d.Value));
        foreach (var (field, value) in dims)
            if (value % devices != 0)
                throw new LlmBuildException(ErrorCodes.TensorParallelSplit,
                    $"NumDevice={devices} does not divide {field}={value} of {where}: tensor parallelism gives each device an equal share of " +
                    $"the attention heads, kv heads and MLP columns. Use a NumDevice that divides {common} ({Choices(Divisors(common))}).");

        QuantScheme q = model.Weights;
        if (!q.IsQuantized) return;
        var shares = new (string What, long K)[]
        {
            ("o_proj (num_attention_heads × head_dim / NumDevice)", (long)cfg.NumHeads * cfg.HeadDim / devices),
            ("down_proj (intermediate_size / NumDevice)", cfg.IntermediateSize / devices),
        };
        long both = Gcd((int)shares[0].K, (int)shares[1].K);
        int group = GroupSizeRule.LargestDividingGroup(both);
        string fix = group > 0 ? $"Use QGroupSize={group} (it divides both shares), 0 (per channel), or another NumDevice."
            : "Use QGroupSize=0 (per channel) or another NumDevice.";
        foreach (var (what, k) in shares)
            GroupSizeRule.Check(q, k, $"NumDevice={devices} gives each device K={k} input columns of {what} of {where}; a device's slice must hold whole quantization groups",
                q.Bits == 4 && k % 2 != 0 ? "Use another NumDevice or an 8-bit Quantize mode." : fix);
        // An act-order weight's stored inputs are permuted across the whole K: no device holds a contiguous share of them.
        if (model.Owners.SelectMany(o => o.Entries).FirstOrDefault(e => e.InputPermuted && SplitOf(e.Role) == WeightSplit.InputColumns) is { } permuted)
            throw new LlmBuildException(ErrorCodes.TensorParallelPermuted,
                $"NumDevice={devices} splits the inputs of '{permuted.SourceTensor}' of {where} across devices, but the checkpoint quantized it in " +
                "activation order (GPTQ desc_act): its inputs are permuted over the whole row. Use NumDevice=1, Quantize=bf16/f16 (dequantized " +
                "in source order), or a checkpoint quantized without desc_act.");
    }

    private static int Gcd(int a, int b) => b == 0 ? Math.Abs(a) : Gcd(b, a % b);

    private static List<int> Divisors(int n) => Enumerable.Range(1, Math.Max(1, n)).Where(i => n % i == 0).ToList();

    private static string Choices(IReadOnlyList<int> values) => values.Count == 1 ? values[0].ToString(CultureInfo.InvariantCulture)
        : string.Join(", ", values.Take(values.Count - 1).Select(v => v.ToString(CultureInfo.InvariantCulture))) + " or " + values[^1].ToString(CultureInfo.InvariantCulture);
}
