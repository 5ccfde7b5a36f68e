using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>The pre-quantization methods whose packed weights LlmBuild unpacks.</summary>
public enum PreQuantizedMethod { Gptq, Awq, AutoRound, CompressedTensors }

/// <summary>How a pre-quantized checkpoint packs its linear weights.</summary>
public enum PackingLayout
{
    /// <summary>GPTQ: qweight i32 [K/(32/b), N] packed along K; qzeros i32 [G, N/(32/b)] packed along N; scales [G, N]; g_idx [K].</summary>
    Gptq,
    /// <summary>AWQ gemm: qweight i32 [K, N/8] packed along N in nibble order 0,2,4,6,1,3,5,7; qzeros [G, N/8] likewise; scales [G, N].</summary>
    AwqGemm,
    /// <summary>compressed-tensors pack-quantized: weight_packed i32 [N, K/(32/b)] packed along K; weight_scale [N, G]; weight_zero_point [N/(32/b), G] (asymmetric).</summary>
    PackQuantized,
}

/// <summary>
/// A checkpoint's quantization_config reduced to what unpacking needs. <see cref="GroupSize"/> is 0 for
/// per-channel (the configs' −1). <see cref="ZeroMinusOne"/> is the classic GPTQ storage of zero − 1 (not for
/// checkpoint_format gptq_v2). <see cref="DescAct"/>: rows were quantized in activation order and g_idx maps
/// each input to its group.
/// </summary>
public sealed record PreQuantizedFormat(PreQuantizedMethod Method, PackingLayout Layout, int Bits, int GroupSize, bool Symmetric, bool DescAct, bool ZeroMinusOne)
{
    /// <summary>Parses quantization_config; null when absent. Coded errors for unsupported or incomplete configs.</summary>
    public static PreQuantizedFormat? FromConfig(JsonObject? config, string source)
    {
        if (config is null) return null;
        string method = (Str(config, "quant_method") ?? throw Missing(source, "quant_method", "the quantization method (gptq, awq, auto-round, compressed-tensors)")).ToLowerInvariant();
        switch (method)
        {
            case "gptq":
            {
                int bits = ReadBits(config, source, "bits");
                string format = (Str(config, "checkpoint_format") ?? "gptq").ToLowerInvariant();
                if (format is not ("gptq" or "gptq_v2"))
                    throw Unsupported(source, $"GPTQ checkpoint_format '{format}' (supported: gptq, gptq_v2)");
                return new PreQuantizedFormat(PreQuantizedMethod.Gptq, PackingLayout.Gptq, bits, ReadGroupSize(config, source, "group_size"),
                    Bool(config, "sym", true), Bool(config, "desc_act", false), format == "gptq");
            }
            case "awq":
            {
                int bits = ReadBits(config, source, "bits", "w_bit");
                string version = (Str(config, "version") ?? "gemm").ToLowerInvariant();
                if (version != "gemm") throw Unsupported(source, $"AWQ version '{version}' (only gemm is supported; re-export with version=gemm)");
                if (bits != 4) throw Unsupported(source, $"AWQ with {bits} bits (AWQ gemm packs 4 bits)");
                bool zeroPoint = Bool(config, "zero_point", true);
                return new PreQuantizedFormat(PreQuantizedMethod.Awq, PackingLayout.AwqGemm, bits, ReadGroupSize(config, source, "group_size", "q_group_size"), !zeroPoint, false, false);
            }
            case "auto-round" or "intel/auto-round" or "auto_round":
            {
                int bits = ReadBits(config, source, "bits");
                string packing = (Str(config, "packing_format") ?? Str(config, "backend") ?? "auto_round:auto_gptq").ToLowerInvariant();
                bool sym = Bool(config, "sym", true);
                int group = ReadGroupSize(config, source, "group_size");
                // AutoRound writes GPTQ-style tensors for its gptq packings (zero − 1 stored) and AWQ-style for auto_awq.
                if (packing.Contains("awq", StringComparison.Ordinal))
                {
                    if (bits != 4) throw Unsupported(source, $"AutoRound auto_awq packing with {bits} bits");
                    return new PreQuantizedFormat(PreQuantizedMethod.AutoRound, PackingLayout.AwqGemm, bits, group, sym, false, false);
                }
                // Every GPTQ-style AutoRound packing (its own triton kernels, auto_gptq, gptqmodel) stores zero − 1 like classic GPTQ.
                if (packing.Contains("gptq", StringComparison.Ordinal) || packing is "auto_round" or "auto-round")
                    return new PreQuantizedFormat(PreQuantizedMethod.AutoRound, PackingLayout.Gptq, bits, group, sym, false, ZeroMinusOne: true);
                throw Unsupported(source, $"AutoRound packing_format '{packing}' (supported: auto_round:auto_gptq, auto_round:gptq, auto_round, auto_round:auto_awq)");
            }
            case "compressed-tensors":
                return CompressedTensors(config, source);
            default:
                throw Unsupported(source, $"quant_method '{method}' (supported: gptq, awq, auto-round, compressed-tensors)");
        }
    }

    private static PreQuantizedFormat CompressedTensors(JsonObject config, string source)
    {
        string format = (Str(config, "format") ?? throw Missing(source, "format", "the compressed-tensors format (pack-quantized)")).ToLowerInvariant();
        if (format != "pack-quantized") throw Unsupported(source, $"compressed-tensors format '{format}' (supported: pack-quantized)");
        if (config["config_groups"] is not JsonObject groups || groups.Count == 0)
            throw Missing(source, "config_groups", "the quantization scheme groups");
        if (groups.Count > 1) throw Unsupported(source, "compressed-tensors with several config_groups");
        var group = groups.First().Value as JsonObject ?? throw Missing(source, "config_groups.<group>", "an object");
        if (group["weights"] is not JsonObject weights) throw Missing(source, "config_groups.<group>.weights", "the weight quantization arguments");
        if (group["input_activations"] is JsonObject) throw Unsupported(source, "compressed-tensors with quantized input activations (only weight-only schemes map to A16MatMul)");
        string where = source + " config_groups weights";
        int bits = ReadBits(weights, where, "num_bits");
        string type = (Str(weights, "type") ?? "int").ToLowerInvariant();
        if (type != "int") throw Unsupported(where, $"weight type '{type}'");
        string strategy = (Str(weights, "strategy") ?? throw Missing(where, "strategy", "group or channel")).ToLowerInvariant();
        int groupSize = strategy switch
        {
            "group" => ReadGroupSize(weights, where, "group_size"),
            "channel" => 0,
            _ => throw Unsupported(where, $"strategy '{strategy}' (supported: group, channel)"),
        };
        if (strategy == "group" && groupSize == 0) throw Missing(where, "group_size", "a positive group size for strategy group");
        return new PreQuantizedFormat(PreQuantizedMethod.CompressedTensors, PackingLayout.PackQuantized, bits, groupSize, Bool(weights, "symmetric", true), false, false);
    }

    private static string? Str(JsonObject o, string name) => o[name] is JsonValue v && v.TryGetValue(out string? s) ? s : null;

    private static bool Bool(JsonObject o, string name, bool fallback) => o[name] is JsonValue v && v.TryGetValue(out bool b) ? b : fallback;

    private static int ReadBits(JsonObject o, string source, params string[] names)
    {
        foreach (string name in names)
        {
            if (o[name] is null) continue;
            if (o[name] is JsonValue v && v.TryGetValue(out int bits) && bits is 4 or 8) return bits;
            throw Unsupported(source, $"{name} = {o[name]!.ToJsonString()} (LlmBuild unpacks 4- and 8-bit weights)");
        }
        throw Missing(source, names[0], "the weight bit width (4 or 8)");
    }

    private static int ReadGroupSize(JsonObject o, string source, params string[] names)
    {
        foreach (string name in names)
        {
            if (o[name] is null) continue;
            if (o[name] is JsonValue v && v.TryGetValue(out int g) && (g == -1 || g > 0)) return g == -1 ? 0 : g;
            throw Unsupported(source, $"{name} = {o[name]!.ToJsonString()} (expected a positive group size or -1 for per-channel)");
        }
        throw Missing(source, names[0], "the group size (e.g. 128, or -1 for per-channel)");
    }

    private static LlmBuildException Missing(string source, string field, string what) =>
        new(ErrorCodes.QuantizationConfigIncomplete,
            $"{source}: field \"{field}\" is missing; it must give {what}. Add it to quantization_config in config.json (see the quantizer's own config for the value).", source);

    private static LlmBuildException Unsupported(string source, string what) =>
        new(ErrorCodes.UnsupportedQuantizationConfig, $"{source}: {what} is not supported. Use a GPTQ, AWQ (gemm), AutoRound or compressed-tensors pack-quantized checkpoint, or the unquantized model.", source);
}
