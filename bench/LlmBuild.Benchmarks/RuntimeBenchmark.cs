using System.Collections.Concurrent;
using System.Diagnostics;
using System.Numerics.Tensors;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Pipeline;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Benchmarks;

/// <summary>
/// The emulator at w4bf16: first-token latency (prefill of a 16-token prompt + lm_head) and decode tokens/s, for the
/// example (examples/tiny-qwen2) and a Qwen2.5-0.5B-shaped random checkpoint (written by the `weights` benchmark),
/// next to the bound a decode step cannot beat: the bytes one token reads (every block's and lm_head's coefficients
/// plus the KV cache) ÷ the measured memory read bandwidth.
/// usage: runtime [qwen-shaped checkpoint dir (default /tmp/llmbuild-bench/qwen2.5-0.5b-shaped)]
/// </summary>
public sealed class RuntimeBenchmark : IBenchmark
{
    public string Name => "runtime";
    public string Description => "emulator decode tokens/s and first-token latency at w4bf16 vs the memory-bandwidth bound";

    public int Run(string[] args)
    {
        string qwenDir = args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "llmbuild-bench", "qwen2.5-0.5b-shaped");
        double bandwidth = MeasureBandwidth();
        Console.WriteLine($"{Environment.ProcessorCount} cores, Vector512 {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}, memory read bandwidth {bandwidth / 1e9:F2} GB/s (all threads)");
        string root = FindRoot();
        string example = Path.Combine(root, "examples", "tiny-qwen2", "checkpoint");
        Measure("tiny-qwen2 (example)", example, 256, 64, bandwidth);
        Measure("tiny-qwen2 (example)", example, 256, 64, bandwidth, ("Batch", "4"));
        Measure("tiny-qwen2 (example)", example, 256, 32, bandwidth, ("NumDevice", "2")); // a device's 32 o_proj columns: group 32
        if (File.Exists(Path.Combine(qwenDir, "model.safetensors")))
        {
            Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth);
            Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth, ("Batch", "4"));
            Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth, ("NumDevice", "2"));
        }
        else
            Console.WriteLine($"(no checkpoint in {qwenDir}: run the `weights` benchmark first to write the Qwen2.5-0.5B-shaped one)");
        return 0;
    }

    private static void Measure(string label, string modelDir, int seqLength, int groupSize, double bandwidth, params (string Name, string Value)[] extra)
    {
        var props = new Dictionary<string, string?>
        {
            ["ModelPath"] = modelDir, ["SeqLength"] = seqLength.ToString(), ["MaxInputLength"] = "128", ["Quantize"] = "w4bf16",
            ["QGroupSize"] = groupSize.ToString(), ["LlmModelName"] = "bench",
        };
        foreach (var (name, value) in extra) props[name] = value;
        string options = string.Concat(extra.Select(e => $", {e.Name}={e.Value}"));
        ResolvedModel model = ResolveStage.Resolve(props, new List<LlmBuildWarning>());
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-bench", "runtime-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        try
        {
            var build = Stopwatch.StartNew();
            string bmodel = Build(model, dir);
            build.Stop();

            using var emu = LlmEmulator.Load(bmodel);
            int[] prompt = Enumerable.Range(0, 16).Select(i => 1000 + 17 * i).ToArray();
            emu.Prefill(prompt); // warm up (JIT, page faults)
            var first = new List<double>();
            for (int r = 0; r < 3; r++)
            {
                var t = Stopwatch.StartNew();
                emu.Prefill(prompt);
                first.Add(t.Elapsed.TotalMilliseconds);
            }
            int steps = 32;
            var ids = Enumerable.Repeat(1, emu.Batch).ToArray();
            for (int slot = 0; slot < emu.Batch; slot++) emu.Prefill(prompt, slot: slot);
            if (emu.Batch == 1) emu.Decode(1); else emu.DecodeBatch(ids); // warm up the decode path too
            for (int slot = 0; slot < emu.Batch; slot++) emu.Prefill(prompt, slot: slot);
            long transferred = emu.Runtime.TransferredBytes;
            var decode = Stopwatch.StartNew();
            for (int s = 0; s < steps; s++)
            {
                float[] logits = emu.Batch == 1 ? emu.Decode(ids[0]) : emu.DecodeBatch(ids);
                for (int b = 0; b < emu.Batch; b++) ids[b] = LlmEmulator.ArgMax(logits.AsSpan(b * emu.VocabSize, emu.VocabSize));
            }
            decode.Stop();
            double tokensPerSecond = steps * emu.Batch / decode.Elapsed.TotalSeconds;
            long transferPerStep = (emu.Runtime.TransferredBytes - transferred) / steps;

            long bytesPerStep = DecodeBytes(bmodel, emu);
            double bound = bandwidth / bytesPerStep * emu.Batch;
            Console.WriteLine($"{label}: w4bf16 g{groupSize}, SeqLength {seqLength}, MaxInputLength 128{options} (built in {build.Elapsed.TotalSeconds:F1} s)");
            Console.WriteLine($"  first token (16-token prompt, padded prefill of 128 + lm_head): {first.Min():F1} ms (best of 3)");
            Console.WriteLine($"  decode: {tokensPerSecond:F1} tokens/s over {emu.Batch} sequence(s) ({1000 * decode.Elapsed.TotalSeconds / steps:F2} ms/step over {steps} steps)");
            Console.WriteLine($"  bytes read per decode step {bytesPerStep / 1e6:F1} MB -> bandwidth bound {bound:F1} tokens/s; achieved {100 * tokensPerSecond / bound:F0} % of it");
            if (emu.Devices > 1)
                Console.WriteLine($"  {emu.Devices} devices: {transferPerStep / 1e3:F1} KB moved between devices per step (all-reduce); device memory {string.Join(" + ", Enumerable.Range(0, emu.Devices).Select(d => $"{emu.Runtime.DeviceBytes(d) / 1e6:F1} MB"))}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Coefficient bytes of the nets one decode step runs (block_cache_i, lm_head; embedding_cache reads one row) plus the KV cache.</summary>
    private static long DecodeBytes(string bmodel, LlmEmulator emu)
    {
        using var c = BModelReader.Read(bmodel);
        long coeff = c.Model.Nets.Where(n => n.Name.StartsWith("block_cache_", StringComparison.Ordinal) || n.Name == "lm_head")
            .Sum(n => (long)(n.Stages[0].CoeffMem?.BinaryCoeff?.Size ?? 0));
        long kv = 2L * emu.Batch * emu.NumLayers * emu.SeqLength * emu.KvHeads * emu.HeadDim * 2;
        return coeff + kv + emu.Batch * emu.HiddenSize * 2;
    }

    /// <summary>Builds the model into <paramref name="dir"/> (bench.bmodel); <paramref name="configFiles"/> go to its config/ folder.</summary>
    internal static string Build(ResolvedModel model, string dir, string[]? configFiles = null)
    {
        using (ICheckpoint checkpoint = CheckpointLoader.Open(model.Options.ModelPath))
            Parallel.ForEach(model.Owners, owner => WeightOwnerWriter.Write(checkpoint, model, owner, Path.Combine(dir, owner.FileName)));
        var pieces = new ConcurrentDictionary<string, string>();
        Parallel.ForEach(model.Pieces, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, piece =>
        {
            string mlir = Path.Combine(dir, piece.Name + ".mlir"), npz = Path.Combine(dir, piece.Name + ".npz"), bmodel = Path.Combine(dir, piece.Name + ".bmodel");
            ExportStage.Run(model, piece, piece.WeightOwner is null ? null : Path.Combine(dir, model.Owner(piece.WeightOwner).FileName), mlir, npz);
            CompileStage.Run(model, piece, mlir, npz, bmodel);
            File.Delete(npz);
            pieces[piece.Name] = bmodel;
        });
        string output = Path.Combine(dir, "bench.bmodel");
        CombineStage.Run(model, model.Pieces.Select(p => pieces[p.Name]).ToArray(), configFiles ?? [], output, Path.Combine(dir, "config"));
        return output;
    }

    /// <summary>Read bandwidth: threads summing disjoint slices of a 512 MiB buffer, best of 5.</summary>
    private static double MeasureBandwidth()
    {
        var data = new float[128 << 20];
        Parallel.For(0, Environment.ProcessorCount, t =>
        {
            int chunk = data.Length / Environment.ProcessorCount;
            data.AsSpan(t * chunk, chunk).Fill(1f);
        });
        double best = 0;
        for (int r = 0; r < 5; r++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, Environment.ProcessorCount, t =>
            {
                int chunk = data.Length / Environment.ProcessorCount;
                _ = TensorPrimitives.Sum(data.AsSpan(t * chunk, chunk));
            });
            best = Math.Max(best, data.Length * 4.0 / sw.Elapsed.TotalSeconds);
        }
        return best;
    }

    internal static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LlmBuild.sln"))) return d.FullName;
        throw new InvalidOperationException("Run the benchmark from inside the repository.");
    }
}
