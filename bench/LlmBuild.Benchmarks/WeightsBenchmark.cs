using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.IO;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Benchmarks;

/// <summary>
/// QuantizeLlmWeights on a Qwen2.5-0.5B-shaped checkpoint (hidden 896, 24 layers, 14 heads, 2 kv heads,
/// intermediate 4864, vocab 151936, tied; random bf16 weights written here): w4bf16 wall time and peak RSS over the
/// runtime's baseline, next to the time to read the checkpoint's bytes once.
/// usage: weights [checkpoint-dir (default /tmp/llmbuild-bench/qwen2.5-0.5b-shaped)] [group size (default 64)]
/// </summary>
public sealed class WeightsBenchmark : IBenchmark
{
    public string Name => "weights";
    public string Description => "w4bf16 quantization of a Qwen2.5-0.5B-shaped checkpoint vs. reading it once";

    private const int Hidden = 896, Layers = 24, Heads = 14, KvHeads = 2, Intermediate = 4864, Vocab = 151936;
    private const int HeadDim = Hidden / Heads;

    public int Run(string[] args)
    {
        string dir = args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "llmbuild-bench", "qwen2.5-0.5b-shaped");
        int groupSize = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 64;
        if (!File.Exists(Path.Combine(dir, "model.safetensors")))
        {
            var g = Stopwatch.StartNew();
            WriteCheckpoint(dir);
            Console.WriteLine($"wrote checkpoint {dir} in {g.Elapsed.TotalSeconds:F1} s");
        }
        string file = Path.Combine(dir, "model.safetensors");
        long bytes = new FileInfo(file).Length;

        ReadOnce(file); // warm the page cache, as a re-run of the build would find it
        var read = Stopwatch.StartNew();
        ReadOnce(file);
        read.Stop();

        var config = ModelConfig.Load(dir);
        var family = ModelFamilies.Get("qwen2");
        var owners = Owners(family);
        var model = new ResolvedModel
        {
            Name = "bench", Options = new BuildOptions { ModelPath = dir, SeqLength = 512 }, Config = config, Family = family.Name,
            ActivationDtype = "bf16", Quantize = "w4bf16", Weights = new QuantScheme(4, groupSize, false), WeightFiles = ["model.safetensors"],
            Pieces = [], Owners = owners,
        };
        string outDir = Path.Combine(Path.GetTempPath(), "llmbuild-bench", "weights-out-" + Environment.ProcessId);
        Directory.CreateDirectory(outDir);

        GC.Collect();
        GC.WaitForPendingFinalizers();
        long baseline = ResetPeakRss();
        var quantize = Stopwatch.StartNew();
        using (var checkpoint = CheckpointLoader.Open(dir))
            // Owners in parallel, as the stage runs them; each also parallelises inside its big tensors.
            Parallel.ForEach(owners, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
                owner => WeightOwnerWriter.Write(checkpoint, model, owner, Path.Combine(outDir, owner.FileName)));
        quantize.Stop();
        long peak = PeakRss();
        long written = Directory.GetFiles(outDir).Sum(f => new FileInfo(f).Length);
        Directory.Delete(outDir, recursive: true);

        // Where the time goes: the same work with output to a null stream (no disk), and CRC-32 alone.
        var noDisk = Stopwatch.StartNew();
        using (var checkpoint = CheckpointLoader.Open(dir))
            Parallel.ForEach(owners, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
                owner => { using var sink = new SeekableNullStream(); WeightOwnerWriter.Write(checkpoint, model, owner, sink); });
        noDisk.Stop();
        var perKind = new Dictionary<string, double>();
        using (var checkpoint = CheckpointLoader.Open(dir))
            foreach (var owner in owners)
            {
                var one = Stopwatch.StartNew();
                using var sink = new SeekableNullStream();
                WeightOwnerWriter.Write(checkpoint, model, owner, sink);
                string kind = owner.Name.StartsWith("block_", StringComparison.Ordinal) ? "blocks" : owner.Name;
                perKind[kind] = perKind.GetValueOrDefault(kind) + one.Elapsed.TotalSeconds;
            }
        byte[] crcData = new byte[64 << 20];
        new Random(1).NextBytes(crcData);
        var crc = Stopwatch.StartNew();
        for (int i = 0; i < 4; i++) LlmBuild.Core.IO.Crc32.Compute(crcData);
        double crcGBs = 4 * crcData.Length / 1e9 / crc.Elapsed.TotalSeconds;

        double readS = read.Elapsed.TotalSeconds, quantS = quantize.Elapsed.TotalSeconds;
        Console.WriteLine($"checkpoint            {bytes / 1e6:F0} MB bf16, {owners.Count} weight owners, group size {groupSize}, {Environment.ProcessorCount} cores, Vector512 {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}");
        Console.WriteLine($"read once (warm)      {readS:F3} s  ({bytes / 1e9 / readS:F2} GB/s)");
        Console.WriteLine($"w4bf16 quantize       {quantS:F3} s  ({quantS / readS:F2}x the read; wrote {written / 1e6:F0} MB)");
        Console.WriteLine($"  same, no disk       {noDisk.Elapsed.TotalSeconds:F3} s  (output to a null stream: compute + CRC only)");
        Console.WriteLine($"  no disk, one owner at a time: {string.Join(", ", perKind.Select(p => $"{p.Key} {p.Value:F3} s"))}");
        Console.WriteLine($"  CRC-32              {crcGBs:F2} GB/s single-threaded");
        Console.WriteLine($"peak RSS over base    {(peak - baseline) / 1048576.0:F0} MiB  (baseline {baseline / 1048576.0:F0} MiB, peak {peak / 1048576.0:F0} MiB)");
        return 0;
    }

    private static List<WeightOwner> Owners(ModelFamily family)
    {
        WeightEntry E(WeightRole role, int layer, WeightStorage storage, params long[] shape) =>
            new(role, layer, family.TensorName(role, layer), family.TensorName(role, layer), storage, shape);
        var owners = new List<WeightOwner> { new("embedding", [E(WeightRole.Embedding, 0, WeightStorage.Activation, Vocab, Hidden)]) };
        for (int l = 0; l < Layers; l++)
        {
            const WeightStorage Q = WeightStorage.Quantized, A = WeightStorage.Activation;
            owners.Add(new WeightOwner($"block_{l}",
            [
                E(WeightRole.InputNorm, l, A, Hidden),
                E(WeightRole.QProj, l, Q, Heads * HeadDim, Hidden), E(WeightRole.QBias, l, A, Heads * HeadDim),
                E(WeightRole.KProj, l, Q, KvHeads * HeadDim, Hidden), E(WeightRole.KBias, l, A, KvHeads * HeadDim),
                E(WeightRole.VProj, l, Q, KvHeads * HeadDim, Hidden), E(WeightRole.VBias, l, A, KvHeads * HeadDim),
                E(WeightRole.OProj, l, Q, Hidden, Heads * HeadDim),
                E(WeightRole.PostAttentionNorm, l, A, Hidden),
                E(WeightRole.MlpGate, l, Q, Intermediate, Hidden), E(WeightRole.MlpUp, l, Q, Intermediate, Hidden),
                E(WeightRole.MlpDown, l, Q, Hidden, Intermediate),
            ]));
        }
        // Tied: lm_head reads the embedding tensor; it stays in the activation dtype.
        owners.Add(new WeightOwner("lm_head",
        [
            E(WeightRole.FinalNorm, 0, WeightStorage.Activation, Hidden),
            new(WeightRole.LmHead, 0, family.TensorName(WeightRole.Embedding), "lm_head.weight", WeightStorage.Activation, [Vocab, Hidden]),
        ]));
        return owners;
    }

    private static void ReadOnce(string path)
    {
        byte[] buffer = new byte[16 << 20];
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        while (f.Read(buffer) > 0) { }
    }

    /// <summary>Writes config.json and a random-bf16 model.safetensors of the Qwen2.5-0.5B shapes.</summary>
    internal static void WriteCheckpoint(string dir)
    {
        Directory.CreateDirectory(dir);
        var family = ModelFamilies.Get("qwen2");
        var tensors = new List<(string Name, long[] Shape)> { (family.TensorName(WeightRole.Embedding), [Vocab, Hidden]) };
        for (int l = 0; l < Layers; l++)
        {
            string T(WeightRole r) => family.TensorName(r, l);
            tensors.AddRange(
            [
                (T(WeightRole.InputNorm), [Hidden]), (T(WeightRole.QProj), [Hidden, Hidden]), (T(WeightRole.QBias), [Hidden]),
                (T(WeightRole.KProj), [KvHeads * HeadDim, Hidden]), (T(WeightRole.KBias), [KvHeads * HeadDim]),
                (T(WeightRole.VProj), [KvHeads * HeadDim, Hidden]), (T(WeightRole.VBias), [KvHeads * HeadDim]),
                (T(WeightRole.OProj), [Hidden, Hidden]), (T(WeightRole.PostAttentionNorm), [Hidden]),
                (T(WeightRole.MlpGate), [Intermediate, Hidden]), (T(WeightRole.MlpUp), [Intermediate, Hidden]), (T(WeightRole.MlpDown), [Hidden, Intermediate]),
            ]);
        }
        tensors.Add((family.TensorName(WeightRole.FinalNorm), [Hidden]));

        var header = new Dictionary<string, object>();
        long offset = 0;
        foreach (var (name, shape) in tensors)
        {
            long n = shape.Aggregate(1L, (a, b) => a * b) * 2;
            header[name] = new { dtype = "BF16", shape, data_offsets = new[] { offset, offset + n } };
            offset += n;
        }
        string json = JsonSerializer.Serialize(header);
        while ((json.Length + 8) % 8 != 0) json += " ";
        using (var f = new FileStream(Path.Combine(dir, "model.safetensors"), FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            byte[] len = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)json.Length);
            f.Write(len);
            f.Write(Encoding.UTF8.GetBytes(json));
            ulong state = 0x9E3779B97F4A7C15;
            float[] floats = new float[1 << 20];
            ushort[] bits = new ushort[1 << 20];
            foreach (var (_, shape) in tensors)
            {
                long n = shape.Aggregate(1L, (a, b) => a * b);
                for (long done = 0; done < n; done += floats.Length)
                {
                    int m = (int)Math.Min(floats.Length, n - done);
                    for (int i = 0; i < m; i++)
                    {
                        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                        floats[i] = ((int)(state >> 40) - (1 << 23)) * (0.05f / (1 << 23));
                    }
                    FloatFormats.FloatToBFloat16(floats.AsSpan(0, m), bits.AsSpan(0, m));
                    f.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan(0, m)));
                }
            }
        }
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": {{Hidden}}, "num_hidden_layers": {{Layers}},
             "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}}, "intermediate_size": {{Intermediate}}, "vocab_size": {{Vocab}},
             "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 32768, "tie_word_embeddings": true,
             "torch_dtype": "bfloat16", "hidden_act": "silu"}
            """);
    }

    /// <summary>Resets the kernel's peak-RSS counter (VmHWM) to the current RSS and returns it.</summary>
    private static long ResetPeakRss()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.WriteLine("note: cannot reset VmHWM; the peak includes checkpoint generation");
        }
        return Status("VmRSS");
    }

    private static long PeakRss() => Status("VmHWM");

    private static long Status(string field)
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        return 0;
    }

    /// <summary>A seekable stream that discards what is written (for timing without disk I/O).</summary>
    private sealed class SeekableNullStream : Stream
    {
        private long _length, _position;
        public override bool CanRead => false;
        public override bool CanSeek => true;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _position; set => _position = value; }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => _position = origin switch { SeekOrigin.Begin => offset, SeekOrigin.Current => _position + offset, _ => _length + offset };
        public override void SetLength(long value) => _length = value;
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer) { _position += buffer.Length; _length = Math.Max(_length, _position); }
    }
}
