using System.Buffers;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// A GGUF file read as a Hugging Face checkpoint: llama.cpp's tensor names map to Hugging Face's
/// (<c>blk.3.attn_q.weight</c> → <c>model.layers.3.self_attn.q_proj.weight</c>), shapes are given outermost first,
/// block-quantized tensors read as their exact f32 dequantization, and for llama-architecture files the rows of Q and K
/// are put back in Hugging Face's order (llama.cpp's converter interleaves each head's two RoPE halves; qwen2 and
/// qwen3 files are stored unpermuted). <see cref="StoredType"/> and <see cref="ReadStoredRows"/> give the raw blocks,
/// in Hugging Face row order, to the quantization stage, which keeps Q8_0 and Q4_0 exactly. Memory-mapped: every read
/// maps only the rows it needs.
/// </summary>
public sealed partial class GgufCheckpoint : ICheckpoint
{
    private readonly MappedFile _file;
    private readonly Dictionary<string, Entry> _tensors;

    /// <summary>
    /// A mapped tensor: its GGUF description and, for permuted Q/K, the number of heads whose rows interleave. A row is
    /// the unit the permutation moves: ggml's row (ne[0] elements) of a matrix, one element of a permuted bias.
    /// </summary>
    private sealed record Entry(TensorInfo Info, GgufTensor Source, int PermutedHeads)
    {
        private bool ElementRows => PermutedHeads > 0 && Source.Dims.Length == 1;
        public long RowLength => ElementRows ? 1 : Source.RowLength;
        public long Rows => ElementRows ? Source.ElementCount : Source.Rows;
        public long RowBytes => ElementRows ? Source.ByteLength / Source.ElementCount : Source.RowBytes;
    }

    private GgufCheckpoint(MappedFile file, GgufFile gguf, Dictionary<string, Entry> tensors)
    {
        _file = file;
        Gguf = gguf;
        _tensors = tensors;
        Directory = System.IO.Path.GetDirectoryName(file.Path)!;
        TensorNames = tensors.Keys.Order(StringComparer.Ordinal).ToArray();
        Files = [System.IO.Path.GetFileName(file.Path)];
    }

    /// <summary>The parsed header (metadata, tensor infos).</summary>
    public GgufFile Gguf { get; }
    public string Directory { get; }
    public IReadOnlyList<string> TensorNames { get; }
    public IReadOnlyList<string> Files { get; }

    /// <summary>True when <paramref name="path"/> names a GGUF file (by its extension) rather than a checkpoint folder.</summary>
    public static bool IsGgufPath(string path) => path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) && !System.IO.Directory.Exists(path);

    public static GgufCheckpoint Open(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full))
            throw new LlmBuildException(ErrorCodes.ModelNotFound, $"GGUF file '{full}' does not exist. Set ModelPath to a .gguf file or a Hugging Face checkpoint folder.", full);
        var file = new MappedFile(full);
        try
        {
            var gguf = GgufFile.Read(file);
            return new GgufCheckpoint(file, gguf, Map(gguf));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    // ---- names ----

    [GeneratedRegex(@"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$", RegexOptions.CultureInvariant)]
    private static partial Regex LayerTensor();

    private static readonly Dictionary<string, string> GlobalNames = new(StringComparer.Ordinal)
    {
        ["token_embd.weight"] = "model.embed_tokens.weight",
        ["output_norm.weight"] = "model.norm.weight",
        ["output.weight"] = "lm_head.weight",
    };

    private static readonly Dictionary<string, string> LayerNames = new(StringComparer.Ordinal)
    {
        ["attn_norm"] = "input_layernorm",
        ["attn_q"] = "self_attn.q_proj",
        ["attn_k"] = "self_attn.k_proj",
        ["attn_v"] = "self_attn.v_proj",
        ["attn_output"] = "self_attn.o_proj",
        ["attn_q_norm"] = "self_attn.q_norm",
        ["attn_k_norm"] = "self_attn.k_norm",
        ["ffn_norm"] = "post_attention_layernorm",
        ["ffn_gate"] = "mlp.gate_proj",
        ["ffn_up"] = "mlp.up_proj",
        ["ffn_down"] = "mlp.down_proj",
    };

    /// <summary>The Hugging Face name of a llama.cpp tensor name, or null when it has none.</summary>
    public static string? HuggingFaceName(string ggufName)
    {
        if (GlobalNames.TryGetValue(ggufName, out string? global)) return global;
        var m = LayerTensor().Match(ggufName);
        if (!m.Success || !LayerNames.TryGetValue(m.Groups[2].Value, out string? part)) return null;
        return $"model.layers.{int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)}.{part}.{m.Groups[3].Value}";
    }

    private static Dictionary<string, Entry> Map(GgufFile gguf)
    {
        string arch = gguf.String("general.architecture") ?? throw new LlmBuildException(ErrorCodes.UnsupportedGgufArchitecture,
            $"'{gguf.Path}' has no general.architecture; it is not a llama.cpp model file.", gguf.Path);
        // llama.cpp's converter permutes Q/K rows only for its llama architecture (LLaMA, Mistral and their kin).
        bool permuted = arch == "llama";
        long heads = permuted ? RequiredCount(gguf, arch + ".attention.head_count") : 0;
        long kvHeads = permuted ? gguf.Integer(arch + ".attention.head_count_kv") ?? heads : 0;
        if (kvHeads is < 0 or > int.MaxValue)
            throw new LlmBuildException(ErrorCodes.UnsupportedGgufArchitecture, $"'{gguf.Path}': {arch}.attention.head_count_kv = {kvHeads} is not a head count.", gguf.Path);
        var result = new Dictionary<string, Entry>(StringComparer.Ordinal);
        foreach (var t in gguf.Tensors)
        {
            // llama 3.1+ files precompute their RoPE scaling as frequency factors; the config carries it instead.
            if (t.Name == GgufModelConfig.RopeFactorsTensor) continue;
            string name = HuggingFaceName(t.Name) ?? throw new LlmBuildException(ErrorCodes.UnmappedGgufTensor,
                $"'{gguf.Path}': tensor '{t.Name}' has no Hugging Face counterpart LlmBuild knows " +
                "(a feature of the architecture LlmBuild does not support).",
                gguf.Path);
            int permuteHeads = 0;
            if (permuted && name.Contains(".self_attn.q_proj.", StringComparison.Ordinal)) permuteHeads = checked((int)heads);
            if (permuted && name.Contains(".self_attn.k_proj.", StringComparison.Ordinal)) permuteHeads = checked((int)kvHeads);
            long[] shape = t.Dims.Reverse().ToArray();
            if (permuted && (name.Contains(".self_attn.q_proj.", StringComparison.Ordinal) || name.Contains(".self_attn.k_proj.", StringComparison.Ordinal))
                && (permuteHeads == 0 || shape[0] % (2L * permuteHeads) != 0))
                throw new LlmBuildException(ErrorCodes.UnmappedGgufTensor,
                    $"'{gguf.Path}': tensor '{t.Name}' has {shape[0]} rows, which do not split into {permuteHeads} heads of two RoPE halves.", gguf.Path);
            var info = new TensorInfo(name, GgmlTypes.PresentedDType(t.Type), shape, gguf.Path);
            result.Add(name, new Entry(info, t, permuteHeads));
        }
        return result;
    }

    private static long RequiredCount(GgufFile gguf, string key) =>
        gguf.Integer(key) is long v and > 0 and <= int.MaxValue ? v : throw new LlmBuildException(ErrorCodes.UnsupportedGgufArchitecture,
            $"'{gguf.Path}' lacks metadata '{key}' (a positive integer), which the architecture needs.", gguf.Path);

    // ---- ICheckpoint ----

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public TensorInfo GetInfo(string name) => Locate(name).Info;

    private Entry Locate(string name) => _tensors.TryGetValue(name, out var e) ? e
        : throw new LlmBuildException(ErrorCodes.TensorNotFound,
            $"The GGUF file '{_file.Path}' has no tensor '{name}' (Hugging Face name; it has {_tensors.Count} tensors).", _file.Path);

    /// <summary>The ggml type a tensor is stored in.</summary>
    public GgmlType StoredType(string name) => Locate(name).Source.Type;

    /// <summary>The source row (in the file) holding Hugging Face row <paramref name="row"/>.</summary>
    private static long SourceRow(Entry e, long row)
    {
        if (e.PermutedHeads == 0) return row;
        // Per head, llama.cpp stores row 2i + j for Hugging Face row j·(d/2) + i (j = which RoPE half).
        long headDim = e.Info.Shape[0] / e.PermutedHeads, half = headDim / 2;
        long head = row / headDim, within = row % headDim;
        return head * headDim + 2 * (within % half) + within / half;
    }

    /// <summary>
    /// The source rows [first, end) that hold Hugging Face rows <paramref name="firstRow"/>..<paramref name="lastRow"/>:
    /// the permutation stays inside a head, so whole heads cover them.
    /// </summary>
    private static (long First, long End) SourceSpan(Entry e, long firstRow, long lastRow)
    {
        if (e.PermutedHeads == 0) return (firstRow, lastRow + 1);
        long headDim = e.Info.Shape[0] / e.PermutedHeads;
        return (firstRow / headDim * headDim, (lastRow / headDim + 1) * headDim);
    }

    /// <summary>
    /// Copies the stored bytes of <paramref name="rowCount"/> rows, starting at Hugging Face row <paramref name="firstRow"/>,
    /// in Hugging Face row order: for block-quantized types, whole rows of ggml blocks.
    /// </summary>
    public void ReadStoredRows(string name, long firstRow, int rowCount, Span<byte> destination)
    {
        var e = Locate(name);
        long rowBytes = e.RowBytes;
        if (firstRow < 0 || rowCount < 0 || firstRow + rowCount > e.Rows || destination.Length != rowCount * rowBytes)
            throw new ArgumentOutOfRangeException(nameof(firstRow), $"Rows {firstRow}+{rowCount} are outside tensor '{name}' ({e.Rows} rows) or the buffer does not fit them.");
        if (rowCount == 0) return;
        var (first, end) = SourceSpan(e, firstRow, firstRow + rowCount - 1);
        using var view = _file.Map(e.Source.Offset + first * rowBytes, (end - first) * rowBytes);
        for (int r = 0; r < rowCount; r++)
            view.Slice((SourceRow(e, firstRow + r) - first) * rowBytes, (int)rowBytes).CopyTo(destination.Slice(checked((int)(r * rowBytes)), (int)rowBytes));
    }

    public void ReadFloat32(string name, long elementOffset, Span<float> destination)
    {
        var e = Locate(name);
        DTypes.RequireFloat(e.Info);
        CheckRange(e, elementOffset, destination.Length, e.Info.ElementCount, "elements");
        long rowLength = e.RowLength;
        int rowBytes = checked((int)e.RowBytes);
        if (e.PermutedHeads == 0 && !GgmlTypes.IsBlockQuantized(e.Source.Type))
        {
            int size = DTypes.Size(e.Info.DType);
            const int ChunkElements = 1 << 22;
            for (int done = 0; done < destination.Length; done += ChunkElements)
            {
                int n = Math.Min(ChunkElements, destination.Length - done);
                using var chunk = _file.Map(e.Source.Offset + (elementOffset + done) * size, (long)n * size);
                MappedCheckpoint.ConvertToFloat32(e.Info.DType, chunk.Span, destination.Slice(done, n));
            }
            return;
        }
        // Row by row: a row is the unit of both the permutation and the block layout. One mapping covers the rows read.
        if (destination.Length == 0) return;
        long end = elementOffset + destination.Length;
        var (firstSource, endSource) = SourceSpan(e, elementOffset / rowLength, (end - 1) / rowLength);
        using var view = _file.Map(e.Source.Offset + firstSource * rowBytes, (endSource - firstSource) * rowBytes);
        float[] row = ArrayPool<float>.Shared.Rent(checked((int)rowLength));
        try
        {
            long position = elementOffset;
            while (position < end)
            {
                long r = position / rowLength, start = position % rowLength;
                int take = (int)Math.Min(rowLength - start, end - position);
                var raw = view.Slice((SourceRow(e, r) - firstSource) * rowBytes, rowBytes);
                var values = row.AsSpan(0, (int)rowLength);
                if (GgmlTypes.IsBlockQuantized(e.Source.Type)) GgmlDequantizer.Dequantize(e.Source.Type, raw, values);
                else MappedCheckpoint.ConvertToFloat32(e.Info.DType, raw, values);
                values.Slice((int)start, take).CopyTo(destination.Slice((int)(position - elementOffset), take));
                position += take;
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(row);
        }
    }

    public void ReadRaw(string name, long byteOffset, Span<byte> destination)
    {
        var e = Locate(name);
        CheckRange(e, byteOffset, destination.Length, e.Info.ByteLength, "bytes");
        if (GgmlTypes.IsBlockQuantized(e.Source.Type))
        {
            // The presented dtype is F32: raw bytes are those of the dequantized values.
            int size = sizeof(float);
            long first = byteOffset / size, last = (byteOffset + destination.Length + size - 1) / size;
            float[] values = new float[last - first];
            ReadFloat32(name, first, values);
            MemoryMarshal.AsBytes(values.AsSpan()).Slice((int)(byteOffset - first * size), destination.Length).CopyTo(destination);
            return;
        }
        long rowBytes = e.RowBytes;
        long position = byteOffset, end = byteOffset + destination.Length;
        while (position < end)
        {
            long r = position / rowBytes, start = position % rowBytes;
            int take = (int)Math.Min(rowBytes - start, end - position);
            _file.Read(e.Source.Offset + SourceRow(e, r) * rowBytes + start, destination.Slice((int)(position - byteOffset), take));
            position += take;
        }
    }

    private static void CheckRange(Entry e, long start, int count, long total, string unit)
    {
        if (start < 0 || start + count > total)
            throw new ArgumentOutOfRangeException(nameof(start), $"Read of {count} {unit} at {start} is outside tensor '{e.Info.Name}' ({total} {unit}).");
    }

    public void Dispose() => _file.Dispose();
}
