using System.Text;
using System.Text.Json;
using LlmBuild.Core.Checkpoints;

namespace LlmBuild.Benchmarks;

/// <summary>
/// Writes a Qwen2-family safetensors checkpoint as a GGUF (version 3) file that llama.cpp loads, so its tools can run the
/// very weights the emulator runs: 2-D weights stay bf16 (llama-quantize turns them into Q4_0), norms and biases f32.
/// The random benchmark checkpoint has no tokenizer, so the file declares a token-less vocabulary of vocab_size
/// entries (enough for llama-bench, which feeds random token ids).
/// </summary>
internal static class GgufWriter
{
    private const uint Magic = 0x46554747; // "GGUF" read as a little-endian u32
    private const int Alignment = 32;
    private const uint TypeF32 = 0, TypeBF16 = 30;

    // Metadata value types.
    private const uint ValueUInt32 = 4, ValueFloat32 = 6, ValueString = 8;

    public static void WriteQwen2(string checkpointDir, string path)
    {
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpointDir, "config.json")));
        JsonElement c = config.RootElement;
        int layers = c.GetProperty("num_hidden_layers").GetInt32();
        var meta = new List<(string Key, uint Type, object Value)>
        {
            ("general.architecture", ValueString, "qwen2"),
            ("general.name", ValueString, "llmbuild-bench"),
            ("qwen2.block_count", ValueUInt32, (uint)layers),
            ("qwen2.context_length", ValueUInt32, (uint)c.GetProperty("max_position_embeddings").GetInt32()),
            ("qwen2.embedding_length", ValueUInt32, (uint)c.GetProperty("hidden_size").GetInt32()),
            ("qwen2.feed_forward_length", ValueUInt32, (uint)c.GetProperty("intermediate_size").GetInt32()),
            ("qwen2.attention.head_count", ValueUInt32, (uint)c.GetProperty("num_attention_heads").GetInt32()),
            ("qwen2.attention.head_count_kv", ValueUInt32, (uint)c.GetProperty("num_key_value_heads").GetInt32()),
            ("qwen2.rope.freq_base", ValueFloat32, (float)c.GetProperty("rope_theta").GetDouble()),
            ("qwen2.attention.layer_norm_rms_epsilon", ValueFloat32, (float)c.GetProperty("rms_norm_eps").GetDouble()),
            ("qwen2.vocab_size", ValueUInt32, (uint)c.GetProperty("vocab_size").GetInt32()),
            ("tokenizer.ggml.model", ValueString, "none"),
        };

        using ICheckpoint checkpoint = CheckpointLoader.Open(checkpointDir);
        var tensors = new List<(string GgufName, string Source, long[] Shape, bool Float32)>();
        void Add(string gguf, string source)
        {
            TensorInfo info = checkpoint.GetInfo(source);
            tensors.Add((gguf, source, info.Shape, info.Shape.Length == 1 || info.DType == TensorDType.F32));
        }
        Add("token_embd.weight", "model.embed_tokens.weight");
        Add("output_norm.weight", "model.norm.weight");
        bool tiedHead = c.TryGetProperty("tie_word_embeddings", out var tied) && tied.ValueKind == JsonValueKind.True;
        if (!tiedHead && checkpoint.Contains("lm_head.weight"))
            Add("output.weight", "lm_head.weight");
        string[] parts =
        [
            "attn_norm.weight:input_layernorm.weight", "ffn_norm.weight:post_attention_layernorm.weight",
            "attn_q.weight:self_attn.q_proj.weight", "attn_q.bias:self_attn.q_proj.bias",
            "attn_k.weight:self_attn.k_proj.weight", "attn_k.bias:self_attn.k_proj.bias",
            "attn_v.weight:self_attn.v_proj.weight", "attn_v.bias:self_attn.v_proj.bias",
            "attn_output.weight:self_attn.o_proj.weight",
            "ffn_gate.weight:mlp.gate_proj.weight", "ffn_up.weight:mlp.up_proj.weight", "ffn_down.weight:mlp.down_proj.weight",
        ];
        for (int l = 0; l < layers; l++)
            foreach (string part in parts)
            {
                string[] names = part.Split(':');
                string source = $"model.layers.{l}.{names[1]}";
                if (checkpoint.Contains(source)) Add($"blk.{l}.{names[0]}", source);
            }

        string temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        using (var w = new BinaryWriter(stream))
        {
            w.Write(Magic);
            w.Write(3u);
            w.Write((ulong)tensors.Count);
            w.Write((ulong)meta.Count);
            foreach (var (key, type, value) in meta)
            {
                WriteString(w, key);
                w.Write(type);
                switch (value)
                {
                    case string s: WriteString(w, s); break;
                    case uint u: w.Write(u); break;
                    case float f: w.Write(f); break;
                }
            }
            long offset = 0;
            var sizes = new List<long>();
            foreach (var t in tensors)
            {
                WriteString(w, t.GgufName);
                w.Write((uint)t.Shape.Length);
                // GGUF lists dimensions innermost first.
                for (int d = t.Shape.Length - 1; d >= 0; d--) w.Write((ulong)t.Shape[d]);
                w.Write(t.Float32 ? TypeF32 : TypeBF16);
                w.Write((ulong)offset);
                long bytes = t.Shape.Aggregate(1L, (a, b) => a * b) * (t.Float32 ? 4 : 2);
                sizes.Add(bytes);
                offset += Align(bytes);
            }
            Pad(w);
            long dataStart = stream.Position;
            for (int i = 0; i < tensors.Count; i++)
            {
                var t = tensors[i];
                if (t.Float32)
                {
                    var values = new float[sizes[i] / 4];
                    checkpoint.ReadFloat32(t.Source, values);
                    w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
                }
                else
                {
                    if (checkpoint.GetInfo(t.Source).DType != TensorDType.BF16)
                        throw new InvalidOperationException($"{t.Source}: the GGUF writer copies bf16 weights only.");
                    var buffer = new byte[1 << 24];
                    for (long at = 0; at < sizes[i]; at += buffer.Length)
                    {
                        int n = (int)Math.Min(buffer.Length, sizes[i] - at);
                        checkpoint.ReadRaw(t.Source, at, buffer.AsSpan(0, n));
                        w.Write(buffer, 0, n);
                    }
                }
                long written = stream.Position - dataStart;
                while (written % Alignment != 0) { w.Write((byte)0); written++; }
            }
        }
        File.Move(temp, path, overwrite: true);
    }

    private static long Align(long v) => (v + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter w)
    {
        while (w.BaseStream.Position % Alignment != 0) w.Write((byte)0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }
}
