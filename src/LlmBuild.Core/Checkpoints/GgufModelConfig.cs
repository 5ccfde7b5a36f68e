using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// The Hugging Face config.json and generation_config.json a GGUF file's metadata stands for, so the rest of the
/// pipeline reads a GGUF model exactly as it reads a checkpoint folder. llama.cpp's keys are
/// <c>&lt;arch&gt;.block_count</c>, <c>.embedding_length</c>, <c>.feed_forward_length</c>, <c>.attention.head_count</c>,
/// <c>.attention.head_count_kv</c>, <c>.attention.key_length</c> (head_dim), <c>.attention.layer_norm_rms_epsilon</c>,
/// <c>.rope.freq_base</c>, <c>.rope.scaling.type/factor</c>, <c>.context_length</c>, <c>.vocab_size</c>. The vocabulary
/// size falls back to the token list, and the embeddings are tied when the file has no <c>output.weight</c>.
/// When every block linear is Q8_0, or every one Q4_0, the config carries <c>quantization_config</c>
/// <c>{"quant_method": "gguf", "bits": 8|4, "group_size": 32, "sym": true}</c>: those blocks are symmetric groups of 32
/// that A16MatMul holds exactly, so Quantize=auto keeps them as a GPTQ source is kept.
/// </summary>
public static class GgufModelConfig
{
    /// <summary>llama.cpp architecture → (Hugging Face model_type, architectures entry).</summary>
    private static readonly Dictionary<string, (string ModelType, string Architecture)> Architectures = new(StringComparer.Ordinal)
    {
        ["llama"] = ("llama", "LlamaForCausalLM"),
        ["qwen2"] = ("qwen2", "Qwen2ForCausalLM"),
        ["qwen3"] = ("qwen3", "Qwen3ForCausalLM"),
    };

    /// <summary>The linears of a decoder block, by their llama.cpp names.</summary>
    private static readonly string[] BlockLinears = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

    public static (JsonObject Config, JsonObject Generation) Synthesize(GgufFile gguf)
    {
        string arch = gguf.String("general.architecture") ?? throw Unsupported(gguf, "it has no general.architecture");
        if (!Architectures.TryGetValue(arch, out var hf))
            throw Unsupported(gguf, $"its architecture '{arch}' is not supported (supported: {string.Join(", ", Architectures.Keys)})");
        long Required(string suffix) => gguf.Integer($"{arch}.{suffix}") is long v and > 0 ? v
            : throw Unsupported(gguf, $"it lacks '{arch}.{suffix}' (a positive integer)");

        long hidden = Required("embedding_length"), heads = Required("attention.head_count");
        long vocab = gguf.Integer($"{arch}.vocab_size") ?? gguf.Strings("tokenizer.ggml.tokens")?.Length
            ?? gguf.Tensors.FirstOrDefault(t => t.Name == "token_embd.weight")?.Dims[^1]
            ?? throw Unsupported(gguf, $"neither '{arch}.vocab_size' nor a token list gives the vocabulary size");
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray(hf.Architecture),
            ["model_type"] = hf.ModelType,
            ["hidden_size"] = hidden,
            ["intermediate_size"] = Required("feed_forward_length"),
            ["num_hidden_layers"] = Required("block_count"),
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = gguf.Integer($"{arch}.attention.head_count_kv") ?? heads,
            ["vocab_size"] = vocab,
            ["rms_norm_eps"] = Finite(gguf, $"{arch}.attention.layer_norm_rms_epsilon") ?? throw Unsupported(gguf, $"it lacks '{arch}.attention.layer_norm_rms_epsilon'"),
            ["rope_theta"] = Finite(gguf, $"{arch}.rope.freq_base") ?? 10000.0,
            ["max_position_embeddings"] = gguf.Integer($"{arch}.context_length") ?? 2048,
            ["tie_word_embeddings"] = !gguf.Tensors.Any(t => t.Name == "output.weight"),
            ["hidden_act"] = "silu",
            ["torch_dtype"] = TorchDtype(gguf),
        };
        if (gguf.Integer($"{arch}.attention.key_length") is long keyLength) config["head_dim"] = keyLength;
        if (RopeScaling(gguf, arch) is { } scaling) config["rope_scaling"] = scaling;
        if (gguf.Integer("tokenizer.ggml.bos_token_id") is long bos) config["bos_token_id"] = bos;
        if (gguf.Integer("tokenizer.ggml.eos_token_id") is long eos) config["eos_token_id"] = eos;
        if (ExactQuantization(gguf) is int bits)
            config["quantization_config"] = new JsonObject { ["quant_method"] = "gguf", ["bits"] = bits, ["group_size"] = 32, ["sym"] = true };

        var generation = new JsonObject();
        if (gguf.Integer("tokenizer.ggml.bos_token_id") is long b) generation["bos_token_id"] = b;
        long[] endIds = EndOfGenerationIds(gguf);
        if (endIds.Length > 0) generation["eos_token_id"] = endIds.Length == 1 ? endIds[0] : new JsonArray(endIds.Select(id => (JsonNode?)id).ToArray());
        // Round-trip through text so every value reads as parsed JSON does (a JsonValue built from a long is no double).
        return (Reparse(config), Reparse(generation));
    }

    private static JsonObject Reparse(JsonObject o) => (JsonObject)JsonNode.Parse(o.ToJsonString())!;

    /// <summary>Control tokens that end a turn in the chat formats llama.cpp knows (it stops on them too).</summary>
    private static readonly string[] EndOfTurnTokens = ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>"];

    /// <summary>
    /// Every id that ends generation: the eos id, the eot/eom ids, and the control tokens that end a chat turn — a GGUF
    /// file keeps one eos id where generation_config.json listed several (Qwen2: im_end and endoftext).
    /// </summary>
    private static long[] EndOfGenerationIds(GgufFile gguf)
    {
        var ids = new SortedSet<long>();
        foreach (string key in new[] { "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id" })
            if (gguf.Integer(key) is long id) ids.Add(id);
        string[]? tokens = gguf.Strings("tokenizer.ggml.tokens");
        long[]? types = gguf.Integers("tokenizer.ggml.token_type");
        if (tokens is not null && types is not null && types.Length == tokens.Length)
            for (int i = 0; i < tokens.Length; i++)
                if (types[i] == 3 && EndOfTurnTokens.Contains(tokens[i], StringComparer.Ordinal)) ids.Add(i);
        return ids.ToArray();
    }

    /// <summary>
    /// 8 or 4 when every block linear is stored Q8_0, or every one Q4_0 (what A16MatMul holds exactly); else null, and
    /// the quantized linears are dequantized and quantized again to the requested mode.
    /// </summary>
    public static int? ExactQuantization(GgufFile gguf)
    {
        var types = gguf.Tensors.Where(t => t.Name.StartsWith("blk.", StringComparison.Ordinal)
                && BlockLinears.Any(l => t.Name.EndsWith($".{l}.weight", StringComparison.Ordinal)))
            .Select(t => t.Type).Distinct().ToArray();
        return types switch
        {
            [GgmlType.Q8_0] => 8,
            [GgmlType.Q4_0] => 4,
            _ => null,
        };
    }

    /// <summary>The ggml types of the block-quantized tensors that are not kept exactly, for the build log.</summary>
    public static IReadOnlyList<GgmlType> RequantizedTypes(GgufFile gguf)
    {
        int? exact = ExactQuantization(gguf);
        return gguf.Tensors.Select(t => t.Type).Where(GgmlTypes.IsBlockQuantized)
            .Where(t => !(exact == 8 && t == GgmlType.Q8_0 || exact == 4 && t == GgmlType.Q4_0))
            .Distinct().Order().ToArray();
    }

    /// <summary>bfloat16 unless the file's float matrices are all F16 (then float16, the dtype it was converted from).</summary>
    private static string TorchDtype(GgufFile gguf)
    {
        var floatMatrices = gguf.Tensors.Where(t => t.Dims.Length >= 2 && t.Type is GgmlType.F16 or GgmlType.BF16 or GgmlType.F32).Select(t => t.Type).Distinct().ToArray();
        return floatMatrices is [GgmlType.F16] ? "float16" : floatMatrices is [GgmlType.F32] ? "float32" : "bfloat16";
    }

    /// <summary>llama.cpp's tensor of per-frequency RoPE divisors (llama 3.1+ scaling, precomputed by the converter).</summary>
    public const string RopeFactorsTensor = "rope_freqs.weight";

    /// <summary>The llama-3 scaling parameters every llama 3.1/3.2/3.3 release uses besides its factor.</summary>
    private const double Llama3LowFreqFactor = 1.0, Llama3HighFreqFactor = 4.0;
    private const int Llama3OriginalContext = 8192;

    private static JsonObject? RopeScaling(GgufFile gguf, string arch)
    {
        if (gguf.Tensors.FirstOrDefault(t => t.Name == RopeFactorsTensor) is { } factors) return Llama3Scaling(gguf, arch, factors);
        string? type = gguf.String($"{arch}.rope.scaling.type");
        if (type is null or "none") return null;
        if (type != "linear")
            throw Unsupported(gguf, $"its RoPE scaling '{type}' is not supported (linear only)");
        double factor = Finite(gguf, $"{arch}.rope.scaling.factor") ?? throw Unsupported(gguf, $"it lacks '{arch}.rope.scaling.factor'");
        return new JsonObject { ["rope_type"] = "linear", ["factor"] = factor };
    }

    /// <summary>
    /// Recovers Hugging Face's llama3 rope_scaling from the divisors llama.cpp stored: 1 for short wavelengths, the
    /// factor for long ones, 1 / ((1 − s)/factor + s) in between, s rising linearly in original_context / wavelength
    /// from low_freq_factor to high_freq_factor. The factor is the largest divisor; the other three parameters are the
    /// ones every llama 3 release uses (or the file's own original_context_length), accepted only if they reproduce
    /// every stored divisor.
    /// </summary>
    private static JsonObject? Llama3Scaling(GgufFile gguf, string arch, GgufTensor tensor)
    {
        float[] stored = gguf.ReadFloat32Tensor(tensor);
        int headDim = checked((int)(gguf.Integer($"{arch}.rope.dimension_count") ?? gguf.Integer($"{arch}.attention.key_length")
            ?? (gguf.Integer($"{arch}.embedding_length") ?? 0) / Math.Max(1, gguf.Integer($"{arch}.attention.head_count") ?? 1)));
        if (stored.Length * 2 != headDim || stored.Any(f => !float.IsFinite(f) || f < 1))
            throw Unsupported(gguf, $"its {RopeFactorsTensor} ({stored.Length} values) is not a set of RoPE divisors ≥ 1 for head_dim {headDim}");
        double factor = stored.Max();
        if (factor == 1) return null;
        double theta = Finite(gguf, $"{arch}.rope.freq_base") ?? 10000.0;
        long original = gguf.Integer($"{arch}.rope.scaling.original_context_length") ?? Llama3OriginalContext;
        double lowWavelength = original / Llama3LowFreqFactor, highWavelength = original / Llama3HighFreqFactor;
        for (int i = 0; i < stored.Length; i++)
        {
            double wavelength = 2 * Math.PI * Math.Pow(theta, 2.0 * i / headDim);
            double expected = wavelength < highWavelength ? 1 : wavelength > lowWavelength ? factor
                : 1 / ((1 - Smooth(original, wavelength)) / factor + Smooth(original, wavelength));
            if (Math.Abs(expected - stored[i]) > 1e-4 * expected)
                throw Unsupported(gguf, $"its {RopeFactorsTensor}[{i}] = {stored[i]} does not follow llama3 RoPE scaling (factor {factor}, low/high frequency factors " +
                    $"{Llama3LowFreqFactor}/{Llama3HighFreqFactor}, original context {original}, which give {expected:G6})");
        }
        return new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = factor, ["low_freq_factor"] = Llama3LowFreqFactor,
            ["high_freq_factor"] = Llama3HighFreqFactor, ["original_max_position_embeddings"] = original,
        };

        static double Smooth(long original, double wavelength) =>
            (original / wavelength - Llama3LowFreqFactor) / (Llama3HighFreqFactor - Llama3LowFreqFactor);
    }

    private static double? Finite(GgufFile gguf, string key) => gguf.Number(key) switch
    {
        null => null,
        double v when double.IsFinite(v) => v,
        double v => throw new LlmBuildException(ErrorCodes.BadGgufMetadata, $"'{gguf.Path}': metadata '{key}' is {v}, not a finite number.", gguf.Path),
    };

    private static LlmBuildException Unsupported(GgufFile gguf, string what) =>
        new(ErrorCodes.UnsupportedGgufArchitecture, $"'{gguf.Path}' cannot be mapped to a Hugging Face config: {what}.", gguf.Path);
}
