using System.Collections.Concurrent;
using System.Diagnostics;
using System.Numerics.Tensors;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;

namespace LlmBuild.Benchmarks;

/// <summary>
/// The emulator at w4bf16: first-token latency (a 16-token prompt, padded prefill of 128 + lm_head) and decode tokens/s,
/// for the example (examples/tiny-qwen2) and a Qwen2.5-0.5B-shaped random checkpoint (written by the `weights`
/// benchmark), next to the bound a decode step cannot beat: the bytes one token reads (every block's and lm_head's
/// coefficients plus the KV cache) ÷ the measured memory read bandwidth. With a llama.cpp build (--peer) it runs
/// llama-bench on the same checkpoint at Q4_0 in the same run (writing the GGUF itself unless --gguf names one) and
/// prints the ratios; with a built `llmbuild` (src/LlmBuild.Cli, Release) it times a fresh `llmbuild run` too.
/// usage: runtime [qwen-shaped checkpoint dir] [--peer llama.cpp-bin-dir] [--gguf q4_0.gguf] [--quick] [--keep-builds]
///   --quick        only the Qwen2.5-0.5B-shaped Batch=1 and Batch=4 builds
///   --keep-builds  reuse the bmodels of an earlier run (in the temp folder) instead of building them again
///   --lm-head-quant  also measure builds with an 8-bit (QuantizeLmHead=w8) and a 4-bit (true) lm_head: fidelity and decode
///   --profile      print where a decode step's time goes (wall time per kind of instruction)
///   --ab           alternate decode steps with the previous kernels (see Previous: the switches of the latest
///                  changes) and print both
/// </summary>
public sealed class RuntimeBenchmark : IBenchmark
{
    public string Name => "runtime";
    public string Description => "emulator decode and prefill at w4bf16 vs the memory-bandwidth bound and (with --peer) llama.cpp";

    private sealed record Figures(double FirstTokenMs, double ColdFirstTokenMs, double DecodeTokensPerSecond, double BoundTokensPerSecond, string BModel);

    private bool _keepBuilds;
    private bool _profile;
    private bool _ab;

    /// <summary>Where this run's builds go unless they are kept (deleted at the end).</summary>
    private static string ScratchRoot => Path.Combine(Path.GetTempPath(), "llmbuild-bench", "runtime-" + Environment.ProcessId);

    public int Run(string[] args)
    {
        try
        {
            return RunAll(args);
        }
        finally
        {
            if (Directory.Exists(ScratchRoot)) Directory.Delete(ScratchRoot, recursive: true);
        }
    }

    private int RunAll(string[] args)
    {
        string? peer = null, gguf = null, qwenDir = null;
        bool quick = false, lmHeadQuant = false;
        for (int i = 0; i < args.Length; i++)
            switch (args[i])
            {
                case "--peer": peer = args[++i]; break;
                case "--gguf": gguf = args[++i]; break;
                case "--quick": quick = true; break;
                case "--keep-builds": _keepBuilds = true; break;
                case "--profile": _profile = true; break;
                case "--ab": _ab = true; break;
                case "--lm-head-quant": lmHeadQuant = true; break;
                default: qwenDir = args[i]; break;
            }
        qwenDir ??= Path.Combine(Path.GetTempPath(), "llmbuild-bench", "qwen2.5-0.5b-shaped");
        double bandwidth = MeasureBandwidth();
        Console.WriteLine($"{Environment.ProcessorCount} cores, Vector512 {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}, memory read bandwidth {bandwidth / 1e9:F2} GB/s (all threads)");
        string root = FindRoot();
        string example = Path.Combine(root, "examples", "tiny-qwen2", "checkpoint");
        if (!quick)
        {
            Measure("tiny-qwen2 (example)", example, 256, 64, bandwidth);
            Measure("tiny-qwen2 (example)", example, 256, 64, bandwidth, ("Batch", "4"));
            Measure("tiny-qwen2 (example)", example, 256, 32, bandwidth, ("NumDevice", "2")); // a device's 32 o_proj columns: group 32
        }
        if (!File.Exists(Path.Combine(qwenDir, "model.safetensors")))
        {
            Console.WriteLine($"(no checkpoint in {qwenDir}: run the `weights` benchmark first to write the Qwen2.5-0.5B-shaped one)");
            return 0;
        }
        Figures one = Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth);
        double? freshFtl = FreshRunFirstToken(root, one.BModel);
        Figures four = Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth, ("Batch", "4"));
        Figures? w8Head = null, w8HeadFour = null;
        if (lmHeadQuant)
        {
            // What a quantized lm_head costs in fidelity: the example's verify figures (a trained-shaped model with
            // Hugging Face goldens) with a bf16, an 8-bit and a 4-bit head, then what it buys in decode speed on the Qwen-shaped one.
            foreach (string quantizeLmHead in new[] { "false", "w8", "true" })
                Fidelity(example, 64, ("QuantizeLmHead", quantizeLmHead));
            w8Head = Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth, ("QuantizeLmHead", "w8"));
            w8HeadFour = Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth, ("QuantizeLmHead", "w8"), ("Batch", "4"));
            Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth, ("QuantizeLmHead", "true"));
        }
        if (!quick) Measure("Qwen2.5-0.5B-shaped", qwenDir, 512, 64, bandwidth, ("NumDevice", "2"));
        (double Prefill, double Decode)? llama = peer is null ? null : RunPeer(peer, gguf, qwenDir);

        double prefill = 128 / (one.FirstTokenMs / 1000);
        Console.WriteLine();
        Console.WriteLine("Qwen2.5-0.5B-shaped, w4bf16 g64 (emulator) vs Q4_0 (llama.cpp), 2 threads, measured in this run:");
        Console.WriteLine($"  decode:  {one.DecodeTokensPerSecond:F1} tokens/s = {100 * one.DecodeTokensPerSecond / one.BoundTokensPerSecond:F0} % of the bandwidth bound ({one.BoundTokensPerSecond:F1})"
            + (llama is { } l1 ? $"; llama.cpp tg32 {l1.Decode:F1} tokens/s -> {one.DecodeTokensPerSecond / l1.Decode:F2}x" : ""));
        Console.WriteLine($"  prefill: {prefill:F0} tokens/s (128 rows, first token {one.FirstTokenMs:F0} ms warm, {one.ColdFirstTokenMs:F0} ms for the first call after loading)"
            + (llama is { } l2 ? $"; llama.cpp pp128 {l2.Prefill:F0} tokens/s -> {prefill / l2.Prefill:F2}x" : ""));
        Console.WriteLine($"  Batch=4 decode: {four.DecodeTokensPerSecond:F1} tokens/s over 4 sequences = {four.DecodeTokensPerSecond / one.DecodeTokensPerSecond:F2}x Batch=1");
        if (w8Head is { } h8)
        {
            Console.WriteLine($"  decode, 8-bit lm_head (QuantizeLmHead=w8): {h8.DecodeTokensPerSecond:F1} tokens/s = {100 * h8.DecodeTokensPerSecond / h8.BoundTokensPerSecond:F0} % of its bound ({h8.BoundTokensPerSecond:F1})"
                + (llama is { } l3 ? $"; vs llama.cpp tg32 -> {h8.DecodeTokensPerSecond / l3.Decode:F2}x" : ""));
            if (w8HeadFour is { } h8four)
                Console.WriteLine($"  Batch=4 decode, 8-bit lm_head: {h8four.DecodeTokensPerSecond:F1} tokens/s = {h8four.DecodeTokensPerSecond / h8.DecodeTokensPerSecond:F2}x Batch=1");
        }
        if (freshFtl is { } fresh)
            Console.WriteLine($"  fresh `llmbuild run` first token {fresh * 1000:F0} ms = {fresh * 1000 / one.FirstTokenMs:F2}x the warm first token");
        return 0;
    }

    private Figures Measure(string label, string modelDir, int seqLength, int groupSize, double bandwidth, params (string Name, string Value)[] extra)
    {
        var props = new Dictionary<string, string?>
        {
            ["ModelPath"] = modelDir, ["SeqLength"] = seqLength.ToString(), ["MaxInputLength"] = "128", ["Quantize"] = "w4bf16",
            ["QGroupSize"] = groupSize.ToString(), ["LlmModelName"] = "bench",
        };
        foreach (var (name, value) in extra) props[name] = value;
        string options = string.Concat(extra.Select(e => $", {e.Name}={e.Value}"));
        ResolvedModel model = ResolveStage.Resolve(props, new List<LlmBuildWarning>());
        string key = string.Concat((Path.GetFileName(modelDir.TrimEnd('/')) + options).Select(ch => char.IsLetterOrDigit(ch) || ch is '.' or '-' ? ch : '_'));
        string dir = _keepBuilds
            ? Path.Combine(Path.GetTempPath(), "llmbuild-bench", "runtime-builds", key)
            : Path.Combine(ScratchRoot, key);
        Directory.CreateDirectory(dir);
        var build = Stopwatch.StartNew();
        string bmodel = Path.Combine(dir, "bench.bmodel");
        bool reused = _keepBuilds && File.Exists(bmodel);
        if (!reused) bmodel = Build(model, dir);
        build.Stop();

        using var emu = LlmEmulator.Load(bmodel);
        int[] prompt = Enumerable.Range(0, 16).Select(i => 1000 + 17 * i).ToArray();
        var cold = Stopwatch.StartNew();
        emu.Prefill(prompt); // the first call pays for JIT and page faults
        cold.Stop();
        var first = new List<double>();
        for (int r = 0; r < 3; r++)
        {
            var t = Stopwatch.StartNew();
            emu.Prefill(prompt);
            first.Add(t.Elapsed.TotalMilliseconds);
        }
        int steps = 32;
        var ids = Enumerable.Repeat(1, emu.Batch).ToArray();
        var logits = new float[emu.Batch * emu.VocabSize];
        for (int slot = 0; slot < emu.Batch; slot++) emu.Prefill(prompt, slot: slot);
        if (emu.Batch == 1) emu.Decode(1); else emu.DecodeBatch(ids); // warm up the decode path too
        for (int slot = 0; slot < emu.Batch; slot++) emu.Prefill(prompt, slot: slot);
        long transferred = emu.Runtime.TransferredBytes;
        // With --ab every other step runs the previous kernels (see Previous): both medians come
        // from the same stretch of a shared machine's load.
        var stepMs = new List<double>();
        var previousMs = new List<double>();
        for (int s = 0; s < (_ab ? 2 * steps : steps); s++)
        {
            bool previous = _ab && PreviousStep(s);
            Previous(previous);
            long t0 = Stopwatch.GetTimestamp();
            Step(emu, ids, logits);
            (previous ? previousMs : stepMs).Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        Previous(false);
        // The median step: on a shared machine one descheduled step must not move the figure.
        double medianMs = Median(stepMs);
        double tokensPerSecond = emu.Batch * 1000 / medianMs;
        long transferPerStep = (emu.Runtime.TransferredBytes - transferred) / (stepMs.Count + previousMs.Count);

        if (_profile) Profile(emu, ids, logits);
        long bytesPerStep = DecodeBytes(bmodel, emu);
        double bound = bandwidth / bytesPerStep * emu.Batch;
        Console.WriteLine($"{label}: w4bf16 g{groupSize}, SeqLength {seqLength}, MaxInputLength 128{options} ({(reused ? "build reused" : $"built in {build.Elapsed.TotalSeconds:F1} s")})");
        Console.WriteLine($"  first token (16-token prompt, padded prefill of 128 + lm_head): {first.Min():F1} ms (best of 3; {cold.Elapsed.TotalMilliseconds:F0} ms for the first call after loading)");
        Console.WriteLine($"  decode: {tokensPerSecond:F1} tokens/s over {emu.Batch} sequence(s) (median step {medianMs:F2} ms over {steps} steps)"
            + (_ab ? $"; previous kernels, alternate steps: median {Median(previousMs):F2} ms -> {Median(previousMs) / medianMs:F2}x" : ""));
        Console.WriteLine($"  bytes read per decode step {bytesPerStep / 1e6:F1} MB -> bandwidth bound {bound:F1} tokens/s; achieved {100 * tokensPerSecond / bound:F0} % of it");
        if (emu.Devices > 1)
            Console.WriteLine($"  {emu.Devices} devices: {transferPerStep / 1e3:F1} KB moved between devices per step (all-reduce); device memory {string.Join(" + ", Enumerable.Range(0, emu.Devices).Select(d => $"{emu.Runtime.DeviceBytes(d) / 1e6:F1} MB"))}");
        return new Figures(first.Min(), cold.Elapsed.TotalMilliseconds, tokensPerSecond, bound, bmodel);
    }

    /// <summary>On: the emulator as it was before the latest changes (few-rows matmuls splitting K once x's rows pass 16 KB), for --ab.</summary>
    internal static void Previous(bool on) => MatMulKernels.FewRowsXBytes = on ? 16 << 10 : MatMulKernels.FewRowsXBytesDefault;

    /// <summary>With --ab, which steps run the previous kernels: new, previous, previous, new, … (a step's place in a pair must not favour either).</summary>
    private static bool PreviousStep(int s) => s % 4 is 1 or 2;

    /// <summary>
    /// One greedy decode step of every slot, as the server's batching loop runs it: the logits land in one reused
    /// buffer (Batch=1 and Batch=4 alike), then each slot takes its argmax.
    /// </summary>
    private static void Step(LlmEmulator emu, int[] ids, float[] logits)
    {
        emu.DecodeBatch(ids, AllActive(emu.Batch), logits);
        for (int b = 0; b < emu.Batch; b++) ids[b] = LlmEmulator.ArgMax(logits.AsSpan(b * emu.VocabSize, emu.VocabSize));
    }

    private static bool[] AllActive(int batch) => _allActive.Length == batch ? _allActive : _allActive = Enumerable.Repeat(true, batch).ToArray();
    private static bool[] _allActive = [];

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>
    /// Where a decode step's time goes: wall time per kind of instruction over 8 steps, per step. With --ab, 16 steps
    /// alternating with the previous kernels, and each line gives both.
    /// </summary>
    private void Profile(LlmEmulator emu, int[] ids, float[] logits)
    {
        const int steps = 8;
        var profiles = new[] { new EmuOpProfile(), new EmuOpProfile() };
        var wall = new double[2];
        var paused = GC.GetTotalPauseDuration();
        int gen2 = GC.CollectionCount(2);
        for (int s = 0; s < (_ab ? 2 * steps : steps); s++)
        {
            int which = _ab && PreviousStep(s) ? 1 : 0;
            Previous(which == 1);
            emu.Runtime.OpProfile = profiles[which];
            long t0 = Stopwatch.GetTimestamp();
            Step(emu, ids, logits);
            wall[which] += Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Previous(false);
        emu.Runtime.OpProfile = null;
        int profiled = _ab ? 2 * steps : steps;
        Console.WriteLine($"  garbage collection: {(GC.GetTotalPauseDuration() - paused).TotalMilliseconds / profiled:F2} ms paused a step, {(double)(GC.CollectionCount(2) - gen2) / profiled:F2} gen2 collections a step");
        for (int which = 0; which < (_ab ? 2 : 1); which++)
        {
            var entries = profiles[which].Entries().ToList();
            var other = profiles[1 - which].Entries().ToDictionary(e => e.Kind, e => e.Ms);
            double total = wall[which] / steps, kernels = entries.Sum(e => e.Ms) / steps;
            double matmuls = entries.Where(e => e.Kind.Contains("MatMul", StringComparison.Ordinal)).Sum(e => e.Ms) / steps;
            Console.WriteLine($"  decode step profile{(which == 1 ? " (previous kernels)" : "")}: {total:F2} ms a step, {kernels:F2} ms in instructions ({total - kernels:F2} ms between them); "
                + $"matmuls {matmuls:F2} ms, the rest {total - matmuls:F2} ms ({100 * (total - matmuls) / total:F0} %)");
            if (which == 1) break;
            foreach (var (kind, ms, count) in entries.Take(12))
                Console.WriteLine($"    {kind,-34} {ms / steps,7:F2} ms  {count / steps,4} calls" + (_ab ? $"  (previous {other.GetValueOrDefault(kind) / steps:F2} ms)" : ""));
        }
    }

    private void Fidelity(string modelDir, int groupSize, params (string Name, string Value)[] extra)
    {
        var props = new Dictionary<string, string?>
        {
            ["ModelPath"] = modelDir, ["SeqLength"] = "256", ["MaxInputLength"] = "128", ["Quantize"] = "w4bf16",
            ["QGroupSize"] = groupSize.ToString(), ["LlmModelName"] = "bench",
        };
        foreach (var (name, value) in extra) props[name] = value;
        ResolvedModel model = ResolveStage.Resolve(props, new List<LlmBuildWarning>());
        string dir = Path.Combine(ScratchRoot, "verify" + string.Concat(extra.Select(e => "_" + e.Name + "_" + e.Value)));
        Directory.CreateDirectory(dir);
        string bmodel = Build(model, dir);
        VerifyReport report = VerifyStage.Measure(model, bmodel, VerifyStage.FixedPrompt(model), VerifyStage.DefaultDecodeSteps, VerifyThresholds.For(model.Weights));
        LogitsFidelity l = report.Logits;
        Console.WriteLine($"example w4bf16 g{groupSize}{string.Concat(extra.Select(e => $", {e.Name}={e.Value}"))}: verify final logits min cosine {l.MinCosine:F6}, mean {l.MeanCosine:F6}, top-1 agreement {l.Top1Agreement:P1} over {l.Positions} positions; worst piece cosine {report.Pieces.Min(p => p.Cosine):F6}");
    }

    /// <summary>
    /// A fresh `llmbuild run` process on the Batch=1 bmodel (the example's Qwen2 tokenizer in its config/, which covers the
    /// same vocabulary): its own first-token latency (FTL) line, so JIT and loading count as a user sees them.
    /// </summary>
    private static double? FreshRunFirstToken(string root, string bmodel)
    {
        string cli = Path.Combine(root, "src", "LlmBuild.Cli", "bin", "Release", "net10.0", "llmbuild.dll");
        if (!File.Exists(cli))
        {
            Console.WriteLine($"  (no {cli}: build src/LlmBuild.Cli in Release to time a fresh `llmbuild run`)");
            return null;
        }
        string config = Path.Combine(Path.GetDirectoryName(bmodel)!, "config");
        Directory.CreateDirectory(config);
        foreach (string name in new[] { "vocab.json", "merges.txt", "tokenizer_config.json", "generation_config.json" })
            File.Copy(Path.Combine(root, "examples", "tiny-qwen2", "checkpoint", name), Path.Combine(config, name), overwrite: true);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { cli, "run", bmodel, "-p", "Name three colours.", "--max-new-tokens", "8" }) psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        string errors = p.StandardError.ReadToEnd();
        p.WaitForExit();
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("FTL: ", StringComparison.Ordinal));
        if (p.ExitCode != 0 || line is null)
        {
            Console.WriteLine($"  (`llmbuild run` failed with exit code {p.ExitCode}: {errors.Trim()})");
            return null;
        }
        Console.WriteLine($"  fresh `llmbuild run`: {line.Trim()}; {output.Split('\n').FirstOrDefault(l => l.StartsWith("TPS: ", StringComparison.Ordinal))?.Trim()}");
        return double.Parse(line["FTL: ".Length..].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// llama-bench (pp128, tg32, 2 threads, 3 repetitions) on a Q4_0 GGUF of the same checkpoint: the one given, or one
    /// written here (bf16 GGUF, then llama-quantize) and kept beside the checkpoint.
    /// </summary>
    private static (double Prefill, double Decode)? RunPeer(string peerBin, string? gguf, string checkpointDir)
    {
        if (gguf is null)
        {
            gguf = Path.Combine(checkpointDir, "model-q4_0.gguf");
            if (!File.Exists(gguf))
            {
                string bf16 = Path.Combine(checkpointDir, "model-bf16.gguf");
                GgufWriter.WriteQwen2(checkpointDir, bf16);
                var (code, _, err) = Exec(Path.Combine(peerBin, "llama-quantize"), bf16, gguf, "Q4_0");
                File.Delete(bf16);
                if (code != 0)
                {
                    Console.WriteLine($"(llama-quantize failed with exit code {code}: {err.Trim()})");
                    return null;
                }
            }
        }
        var (exit, json, errors) = Exec(Path.Combine(peerBin, "llama-bench"), "-m", gguf, "-t", Environment.ProcessorCount.ToString(), "-p", "128", "-n", "32", "-r", "3", "-o", "json");
        if (exit != 0)
        {
            Console.WriteLine($"(llama-bench failed with exit code {exit}: {errors.Trim()})");
            return null;
        }
        double prefill = 0, decode = 0;
        foreach (var run in System.Text.Json.JsonDocument.Parse(json).RootElement.EnumerateArray())
        {
            double tps = run.GetProperty("avg_ts").GetDouble();
            if (run.GetProperty("n_prompt").GetInt32() > 0) prefill = tps; else decode = tps;
        }
        Console.WriteLine($"llama.cpp ({Path.GetFileName(gguf)}, {Environment.ProcessorCount} threads): pp128 {prefill:F1} tokens/s, tg32 {decode:F1} tokens/s");
        return (prefill, decode);
    }

    private static (int Code, string Output, string Errors) Exec(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi)!;
        var errors = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, errors.Result);
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
        // The family's view of the checkpoint, as the quantize stage reads it (fused parts, the patch embedding as a linear).
        // Owners and pieces share names (block_0 …): owners get their own folder, as in the build's weights/.
        string weights = Path.Combine(dir, "weights");
        Directory.CreateDirectory(weights);
        using (ICheckpoint checkpoint = QuantizeStage.OpenSource(model))
            Parallel.ForEach(model.Owners, owner => QuantizeStage.Run(checkpoint, model, owner.Name, Path.Combine(weights, owner.FileName)));
        var pieces = new ConcurrentDictionary<string, string>();
        Parallel.ForEach(model.Pieces, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, piece =>
        {
            string mlir = Path.Combine(dir, piece.Name + ".mlir"), npz = Path.Combine(dir, piece.Name + "_top_weights.npz"), bmodel = Path.Combine(dir, piece.Name + ".bmodel");
            ExportStage.RunSelfContained(model, piece, piece.WeightOwner is null ? null : Path.Combine(weights, model.Owner(piece.WeightOwner).FileName), mlir, npz);
            CompileStage.Run(model, piece, mlir, npz, bmodel);
            File.Delete(npz);
            pieces[piece.Name] = bmodel;
        });
        Directory.Delete(weights, recursive: true);
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
