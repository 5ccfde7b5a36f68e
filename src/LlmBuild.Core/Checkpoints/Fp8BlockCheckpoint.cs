using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// A block-wise ("fine-grained") FP8 checkpoint read as a float one: each F8_E4M3 / F8_E5M2 weight <c>x.weight</c>
/// [N, K] comes with <c>x.weight_scale_inv</c> [⌈N/bn⌉, ⌈K/bk⌉] (config.json's
/// <c>quantization_config.weight_block_size</c> = [bn, bk]), and reads as
/// <c>fp8(x.weight[n, k]) · scale_inv[n / bn, k / bk]</c> in f32 — one rounding of the exact product, as Hugging Face
/// dequantizes. Blocks on the bottom and right edges may be partial. The scale tensors (and static activation scales)
/// are hidden, so the pipeline sees an ordinary float checkpoint and quantizes it to the requested mode.
/// </summary>
public sealed class Fp8BlockCheckpoint : ICheckpoint
{
    private readonly ICheckpoint _inner;
    private readonly int _blockRows, _blockCols;
    private readonly Dictionary<string, TensorInfo> _weights = new(StringComparer.Ordinal);
    private readonly Dictionary<string, float[]> _scales = new(StringComparer.Ordinal);
    private readonly HashSet<string> _hidden = new(StringComparer.Ordinal);

    private Fp8BlockCheckpoint(ICheckpoint inner, int blockRows, int blockCols)
    {
        _inner = inner;
        _blockRows = blockRows;
        _blockCols = blockCols;
        foreach (string name in inner.TensorNames)
        {
            var info = inner.GetInfo(name);
            if (name.EndsWith(".input_scale", StringComparison.Ordinal) || name.EndsWith(".weight_scale_inv", StringComparison.Ordinal)) _hidden.Add(name);
            if (info.DType is not (TensorDType.F8E4M3 or TensorDType.F8E5M2)) continue;
            string scaleName = name + "_scale_inv";
            if (!inner.Contains(scaleName))
                throw Bad(info, $"FP8 weight '{name}' has no '{scaleName}'; a block-wise FP8 checkpoint stores one scale per {blockRows}×{blockCols} block.");
            var scale = inner.GetInfo(scaleName);
            if (info.Shape.Length != 2)
                throw Bad(info, $"FP8 weight '{name}' has shape {info.ShapeText}; block-wise FP8 weights are 2-D [out, in].");
            long[] expected = [(info.Shape[0] + blockRows - 1) / blockRows, (info.Shape[1] + blockCols - 1) / blockCols];
            if (!scale.Shape.AsSpan().SequenceEqual(expected) || !DTypes.IsFloat(scale.DType) || scale.DType is TensorDType.F8E4M3 or TensorDType.F8E5M2)
                throw Bad(scale, $"'{scaleName}' has shape {scale.ShapeText} and dtype {scale.DType}; weight {info.ShapeText} with weight_block_size [{blockRows}, {blockCols}] needs a float scale of shape [{expected[0]}, {expected[1]}].");
            _weights[name] = info with { DType = TensorDType.F32 };
        }
        TensorNames = inner.TensorNames.Where(n => !_hidden.Contains(n)).ToArray();
    }

    /// <summary>
    /// Wraps <paramref name="inner"/> when <paramref name="modelDir"/>'s config.json declares <c>quant_method: fp8</c>;
    /// otherwise returns it unchanged. A missing or malformed config.json is left to the config reader to report.
    /// </summary>
    public static ICheckpoint WrapIfFp8(ICheckpoint inner, string modelDir)
    {
        try
        {
            if (BlockSize(modelDir) is not { } block) return inner;
            return new Fp8BlockCheckpoint(inner, block.Rows, block.Cols);
        }
        catch
        {
            inner.Dispose();
            throw;
        }
    }

    /// <summary>config.json's FP8 weight_block_size, or null when the checkpoint is not FP8.</summary>
    public static (int Rows, int Cols)? BlockSize(string modelDir)
    {
        string path = Path.Combine(modelDir, "config.json");
        JsonObject? quantization;
        try
        {
            quantization = File.Exists(path) ? (JsonNode.Parse(File.ReadAllText(path)) as JsonObject)?["quantization_config"] as JsonObject : null;
        }
        catch (JsonException)
        {
            return null;
        }
        return quantization is null ? null : BlockSize(quantization, path);
    }

    /// <summary>The weight_block_size of an <c>fp8</c> quantization_config; null for other methods; coded errors for bad fields.</summary>
    public static (int Rows, int Cols)? BlockSize(JsonObject quantization, string source)
    {
        if (quantization["quant_method"] is not JsonValue m || !m.TryGetValue(out string? method) || method != "fp8") return null;
        if (quantization["weight_block_size"] is not JsonArray { Count: 2 } block)
            throw new LlmBuildException(ErrorCodes.QuantizationConfigIncomplete,
                $"{source}: the fp8 quantization_config has no \"weight_block_size\": [rows, cols]; LlmBuild reads block-wise FP8 checkpoints (one scale per block), not per-tensor ones.", source);
        int Dim(JsonNode? n) => n is JsonValue v && v.TryGetValue(out int d) && d > 0 ? d
            : throw new LlmBuildException(ErrorCodes.UnsupportedQuantizationConfig, $"{source}: weight_block_size {block.ToJsonString()} must hold two positive integers.", source);
        string format = quantization["fmt"] is JsonValue f && f.TryGetValue(out string? fmt) ? fmt : "e4m3";
        if (format is not ("e4m3" or "e5m2"))
            throw new LlmBuildException(ErrorCodes.UnsupportedQuantizationConfig, $"{source}: FP8 format '{format}' is not supported (e4m3, e5m2).", source);
        return (Dim(block[0]), Dim(block[1]));
    }

    public string Directory => _inner.Directory;
    public IReadOnlyList<string> TensorNames { get; }
    public IReadOnlyList<string> Files => _inner.Files;

    public bool Contains(string name) => !_hidden.Contains(name) && _inner.Contains(name);

    public TensorInfo GetInfo(string name)
    {
        if (_weights.TryGetValue(name, out var info)) return info;
        if (_hidden.Contains(name)) throw Hidden(name);
        return _inner.GetInfo(name);
    }

    private float[] Scales(string name)
    {
        lock (_scales)
        {
            if (_scales.TryGetValue(name, out float[]? cached)) return cached;
            string scaleName = name + "_scale_inv";
            float[] scales = new float[_inner.GetInfo(scaleName).ElementCount];
            _inner.ReadFloat32(scaleName, scales);
            _scales[name] = scales;
            return scales;
        }
    }

    public void ReadFloat32(string name, long elementOffset, Span<float> destination)
    {
        if (!_weights.TryGetValue(name, out var info))
        {
            _inner.ReadFloat32(name, elementOffset, destination);
            return;
        }
        _inner.ReadFloat32(name, elementOffset, destination); // the FP8 codes, widened exactly
        float[] scales = Scales(name);
        long cols = info.Shape[1], scaleCols = (cols + _blockCols - 1) / _blockCols;
        long position = elementOffset, end = elementOffset + destination.Length;
        // One scale per run of a row inside one block: a vector multiply each (one f32 rounding per element, as a scalar one).
        while (position < end)
        {
            long row = position / cols, col = position % cols;
            long runEnd = Math.Min(Math.Min((col / _blockCols + 1) * _blockCols, cols) + row * cols, end);
            var run = destination.Slice((int)(position - elementOffset), (int)(runEnd - position));
            System.Numerics.Tensors.TensorPrimitives.Multiply(run, scales[row / _blockRows * scaleCols + col / _blockCols], run);
            position = runEnd;
        }
    }

    public void ReadRaw(string name, long byteOffset, Span<byte> destination)
    {
        if (!_weights.ContainsKey(name))
        {
            if (_hidden.Contains(name)) throw Hidden(name);
            _inner.ReadRaw(name, byteOffset, destination);
            return;
        }
        // The presented dtype is F32: raw bytes are those of the dequantized values.
        long first = byteOffset / sizeof(float), last = (byteOffset + destination.Length + sizeof(float) - 1) / sizeof(float);
        float[] values = new float[last - first];
        ReadFloat32(name, first, values);
        MemoryMarshal.AsBytes(values.AsSpan()).Slice((int)(byteOffset - first * sizeof(float)), destination.Length).CopyTo(destination);
    }

    /// <summary>Scales are folded into their weights, so they are not tensors of the dequantized view.</summary>
    private LlmBuildException Hidden(string name) =>
        new(ErrorCodes.TensorNotFound, $"'{name}' is an FP8 scale of the checkpoint in '{Directory}'; it is folded into its weight when read.", Directory);

    private static LlmBuildException Bad(TensorInfo info, string what) => new(ErrorCodes.BadFp8Weight, what, info.File);

    public void Dispose() => _inner.Dispose();
}
