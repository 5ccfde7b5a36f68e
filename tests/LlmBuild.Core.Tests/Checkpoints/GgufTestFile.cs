using System.Buffers.Binary;
using System.Text;
using LlmBuild.Core.Checkpoints;

namespace LlmBuild.Core.Tests.Checkpoints;

/// <summary>A GGUF writer for tests, written from the format description (little-endian, version 3).</summary>
internal static class GgufTestFile
{
    public sealed record Tensor(string Name, long[] Dims, GgmlType Type, byte[] Data);

    /// <summary>
    /// Metadata values by C# type: string, byte, uint, int, ulong, long, float, double, bool; arrays as string[],
    /// int[] (i32), float[] (f32).
    /// </summary>
    public static byte[] Build(IEnumerable<(string Key, object Value)> metadata, IReadOnlyList<Tensor> tensors, uint alignment = 32)
    {
        var s = new MemoryStream();
        var w = new BinaryWriter(s, Encoding.UTF8);
        var kvs = metadata.ToList();
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)kvs.Count);
        void Str(string v) { byte[] b = Encoding.UTF8.GetBytes(v); w.Write((ulong)b.Length); w.Write(b); }
        foreach (var (key, value) in kvs)
        {
            Str(key);
            switch (value)
            {
                case string v: w.Write((uint)GgufValueType.String); Str(v); break;
                case byte v: w.Write((uint)GgufValueType.UInt8); w.Write(v); break;
                case uint v: w.Write((uint)GgufValueType.UInt32); w.Write(v); break;
                case int v: w.Write((uint)GgufValueType.Int32); w.Write(v); break;
                case ulong v: w.Write((uint)GgufValueType.UInt64); w.Write(v); break;
                case long v: w.Write((uint)GgufValueType.Int64); w.Write(v); break;
                case float v: w.Write((uint)GgufValueType.Float32); w.Write(v); break;
                case double v: w.Write((uint)GgufValueType.Float64); w.Write(v); break;
                case bool v: w.Write((uint)GgufValueType.Bool); w.Write((byte)(v ? 1 : 0)); break;
                case string[] v: w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.String); w.Write((ulong)v.Length); foreach (var x in v) Str(x); break;
                case int[] v: w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.Int32); w.Write((ulong)v.Length); foreach (var x in v) w.Write(x); break;
                case float[] v: w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.Float32); w.Write((ulong)v.Length); foreach (var x in v) w.Write(x); break;
                default: throw new ArgumentException(value.GetType().Name);
            }
        }
        long offset = 0;
        var offsets = new List<long>();
        foreach (var t in tensors)
        {
            Str(t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (long d in t.Dims) w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offsets.Add(offset);
            offset = (offset + t.Data.Length + alignment - 1) / alignment * alignment;
        }
        w.Flush();
        while (s.Length % alignment != 0) s.WriteByte(0);
        long dataStart = s.Length;
        for (int i = 0; i < tensors.Count; i++)
        {
            while (s.Length < dataStart + offsets[i]) s.WriteByte(0);
            s.Write(tensors[i].Data);
        }
        return s.ToArray();
    }

    /// <summary>Random bytes for <paramref name="blocks"/> blocks of a type, with every f16 scale field set to a sane value.</summary>
    public static byte[] RandomBlocks(GgmlType type, int blocks, int seed)
    {
        var (_, blockBytes) = GgmlTypes.Layout(type)!.Value;
        var random = new Random(seed);
        byte[] data = new byte[blocks * blockBytes];
        random.NextBytes(data);
        // f16 fields: positions of d (and dmin/m) inside each block.
        int[] halves = type switch
        {
            GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.Q8_0 => [0],
            GgmlType.Q4_1 or GgmlType.Q5_1 or GgmlType.Q4_K or GgmlType.Q5_K => [0, 2],
            GgmlType.Q2_K => [80, 82],
            GgmlType.Q3_K => [108],
            GgmlType.Q6_K => [208],
            _ => [],
        };
        for (int b = 0; b < blocks; b++)
            foreach (int h in halves)
                BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(b * blockBytes + h), (ushort)BitConverter.HalfToUInt16Bits((Half)(random.NextDouble() * 0.02 - 0.01)));
        return data;
    }

    /// <summary>A small llama-architecture file: 1 layer, hidden 64, 2 heads, 1 kv head, 8 tokens, several tensor types.</summary>
    /// <param name="ropeFactors">A llama.cpp rope_freqs.weight tensor to add (head_dim / 2 = 16 values).</param>
    public static byte[] SmallLlama(uint alignment = 32, float[]? ropeFactors = null)
    {
        string[] tokens = ["<unk>", "<s>", "</s>", "\u2581a", "\u2581b", "a", "b", "\u2581"];
        var metadata = new List<(string, object)>
        {
            ("general.architecture", "llama"), ("general.alignment", alignment), ("llama.block_count", 1u), ("llama.embedding_length", 64u),
            ("llama.feed_forward_length", 64u), ("llama.attention.head_count", 2u), ("llama.attention.head_count_kv", 1u),
            ("llama.attention.layer_norm_rms_epsilon", 1e-5f), ("llama.rope.freq_base", 10000f), ("llama.context_length", 128u),
            ("tokenizer.ggml.model", "llama"), ("tokenizer.ggml.tokens", tokens), ("tokenizer.ggml.scores", new float[] { 0, 0, 0, -1, -2, -3, -4, -5 }),
            ("tokenizer.ggml.token_type", new[] { 2, 3, 3, 1, 1, 1, 1, 1 }), ("tokenizer.ggml.bos_token_id", 1u), ("tokenizer.ggml.eos_token_id", 2u),
            ("tokenizer.ggml.add_bos_token", true), ("general.file_type", 7L), ("general.size", 1UL), ("tokenizer.chat_template", "{{ messages }}"),
        };
        byte[] F32(int n, int seed) => TestFiles.Bytes(TestFiles.RandomFloats(n, seed, 0.1f));
        byte[] F16(int n, int seed) => TestFiles.RandomFloats(n, seed, 0.1f).SelectMany(f => BitConverter.GetBytes((Half)f)).ToArray();
        var tensors = new List<Tensor>
        {
            new("token_embd.weight", [64, 8], GgmlType.Q8_0, RandomBlocks(GgmlType.Q8_0, 16, 1)),
            new("output_norm.weight", [64], GgmlType.F32, F32(64, 2)),
            new("blk.0.attn_norm.weight", [64], GgmlType.F32, F32(64, 3)),
            new("blk.0.ffn_norm.weight", [64], GgmlType.F32, F32(64, 4)),
            new("blk.0.attn_q.weight", [64, 64], GgmlType.Q4_0, RandomBlocks(GgmlType.Q4_0, 128, 5)),
            new("blk.0.attn_k.weight", [64, 32], GgmlType.F16, F16(64 * 32, 6)),
            new("blk.0.attn_k.bias", [32], GgmlType.F32, F32(32, 12)),
            new("blk.0.attn_v.weight", [64, 32], GgmlType.Q5_1, RandomBlocks(GgmlType.Q5_1, 64, 7)),
            new("blk.0.attn_output.weight", [64, 64], GgmlType.Q4_1, RandomBlocks(GgmlType.Q4_1, 128, 8)),
            new("blk.0.ffn_gate.weight", [64, 64], GgmlType.Q5_0, RandomBlocks(GgmlType.Q5_0, 128, 9)),
            new("blk.0.ffn_up.weight", [64, 64], GgmlType.F32, F32(64 * 64, 10)),
            new("blk.0.ffn_down.weight", [64, 64], GgmlType.Q8_0, RandomBlocks(GgmlType.Q8_0, 128, 11)),
        };
        if (ropeFactors is not null) tensors.Add(new("rope_freqs.weight", [ropeFactors.Length], GgmlType.F32, TestFiles.Bytes(ropeFactors)));
        return Build(metadata, tensors, alignment);
    }
}
