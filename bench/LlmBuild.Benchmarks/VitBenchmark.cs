using System.Diagnostics;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;

namespace LlmBuild.Benchmarks;

/// <summary>
/// The emulator's image-encode time: the vit net of Qwen2.5-VL-3B's vision tower (embed 1280, 16 heads, MLP 3420
/// gated SiLU, window 112 px, full attention every 8th block, merger to 2048; random bf16 weights) at MaxPixels 672,896
/// (3072 patches, 768 image tokens) on a 672×896 image, wall time and core-seconds per run, and per block. --depth N
/// builds N of the 32 blocks (the last of every 8 full-attention) to fit a busy machine; the full-depth time is then
/// N's scaled by 32/N, stated as such.
/// usage: vit [--depth N] [--runs R]
/// </summary>
public sealed class VitBenchmark : IBenchmark
{
    public string Name => "vit";
    public string Description => "emulator image-encode time of Qwen2.5-VL-3B's vision tower (random weights) for a 672x896 image";

    private const int Embed = 1280, Heads = 16, Inter = 3420, OutHidden = 2048, FullDepth = 32;

    public int Run(string[] args)
    {
        int depth = FullDepth, runs = 2;
        for (int i = 0; i < args.Length; i++)
            switch (args[i])
            {
                case "--depth": depth = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture); break;
                case "--runs": runs = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture); break;
                default: Console.WriteLine("usage: vit [--depth N] [--runs R]"); return 2;
            }
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-bench", "vit-" + Environment.ProcessId);
        try
        {
            Directory.CreateDirectory(dir);
            string model = Path.Combine(dir, "model");
            var clock = Stopwatch.StartNew();
            int[] full = Enumerable.Range(0, depth).Where(b => b % 8 == 7 || b == depth - 1).ToArray();
            WriteCheckpoint(model, depth, full);
            Console.WriteLine($"Qwen2.5-VL-3B vision tower, {depth} of {FullDepth} blocks (full attention in {string.Join(",", full)}): checkpoint written in {clock.Elapsed.TotalSeconds:F1} s");
            var resolved = ResolveStage.Resolve(new Dictionary<string, string?>
            {
                ["ModelPath"] = model, ["SeqLength"] = "64", ["Quantize"] = "bf16", ["MaxPixels"] = "672,896", ["Verify"] = "false",
            }, new List<LlmBuildWarning>());
            resolved = resolved with
            {
                Pieces = resolved.Pieces.Where(p => p.Kind == PieceKind.Vit).ToArray(),
                Owners = resolved.Owners.Where(o => o.Name == VisionPlan.VitOwner).ToArray(),
            };
            clock.Restart();
            string bmodel = RuntimeBenchmark.Build(resolved, dir);
            Console.WriteLine($"vit net built in {clock.Elapsed.TotalSeconds:F1} s: {new FileInfo(bmodel).Length / 1048576.0:F0} MiB, {resolved.VitPatches} patches");

            VisionConfig vision = resolved.Config.Vision!;
            using var rt = EmulatorRuntime.Load(bmodel);
            var vit = rt.Group("vit");
            var grid = (1, 896 / 14, 672 / 14);
            var pixels = new float[(long)grid.Item2 * grid.Item3 * vision.PatchDim];
            for (long i = 0; i < pixels.Length; i++) pixels[i] = (float)((i * 2654435761L % 4001) / 1000.0 - 2.0);
            var inputs = VisionInputs.Prepare(pixels, grid, vision, resolved.VitPatches);
            var process = Process.GetCurrentProcess();
            for (int r = 0; r < runs; r++)
            {
                process.Refresh();
                TimeSpan cpu0 = process.TotalProcessorTime;
                clock.Restart();
                float[] embeds = LlmEmulator.EncodeImage(rt, vit, inputs);
                double wall = clock.Elapsed.TotalSeconds;
                process.Refresh();
                double cpu = (process.TotalProcessorTime - cpu0).TotalSeconds;
                Console.WriteLine($"run {r + 1}{(r == 0 ? " (cold)" : "")}: {wall:F2} s wall, {cpu:F2} core-s ({embeds.Length / OutHidden} image tokens); " +
                    $"per block {wall / depth:F3} s wall, {cpu / depth:F3} core-s; 32 blocks ≈ {wall * FullDepth / depth:F1} s wall, {cpu * FullDepth / depth:F1} core-s" +
                    (depth == FullDepth ? " (measured)" : $" (scaled from {depth})"));
            }
            Console.WriteLine($"{Environment.ProcessorCount} cores; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]} at the end (other processes share the cores: core-seconds are the steadier figure)");
            return 0;
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Qwen2.5-VL-3B's config with its vision tower cut to <paramref name="depth"/> blocks and a one-layer LLM of its width.</summary>
    private static void WriteCheckpoint(string dir, int depth, int[] fullAttention)
    {
        Directory.CreateDirectory(dir);
        var tensors = new List<(string, long[])>
        {
            ("model.embed_tokens.weight", [1000, OutHidden]), ("lm_head.weight", [1000, OutHidden]), ("model.norm.weight", [OutHidden]),
            ("visual.patch_embed.proj.weight", [Embed, 3, 2, 14, 14]),
            ("visual.merger.ln_q.weight", [Embed]), ("visual.merger.mlp.0.weight", [4 * Embed, 4 * Embed]), ("visual.merger.mlp.0.bias", [4 * Embed]),
            ("visual.merger.mlp.2.weight", [OutHidden, 4 * Embed]), ("visual.merger.mlp.2.bias", [OutHidden]),
        };
        foreach (var (name, shape) in new (string, long[])[]
        {
            ("input_layernorm.weight", [OutHidden]), ("post_attention_layernorm.weight", [OutHidden]),
            ("self_attn.q_proj.weight", [OutHidden, OutHidden]), ("self_attn.q_proj.bias", [OutHidden]),
            ("self_attn.k_proj.weight", [256, OutHidden]), ("self_attn.k_proj.bias", [256]),
            ("self_attn.v_proj.weight", [256, OutHidden]), ("self_attn.v_proj.bias", [256]), ("self_attn.o_proj.weight", [OutHidden, OutHidden]),
            ("mlp.gate_proj.weight", [256, OutHidden]), ("mlp.up_proj.weight", [256, OutHidden]), ("mlp.down_proj.weight", [OutHidden, 256]),
        })
            tensors.Add(("model.layers.0." + name, shape));
        for (int b = 0; b < depth; b++)
            foreach (var (name, shape) in new (string, long[])[]
            {
                ("norm1.weight", [Embed]), ("norm2.weight", [Embed]), ("attn.qkv.weight", [3 * Embed, Embed]), ("attn.qkv.bias", [3 * Embed]),
                ("attn.proj.weight", [Embed, Embed]), ("attn.proj.bias", [Embed]),
                ("mlp.gate_proj.weight", [Inter, Embed]), ("mlp.gate_proj.bias", [Inter]), ("mlp.up_proj.weight", [Inter, Embed]), ("mlp.up_proj.bias", [Inter]),
                ("mlp.down_proj.weight", [Embed, Inter]), ("mlp.down_proj.bias", [Embed]),
            })
                tensors.Add(($"visual.blocks.{b}." + name, shape));
        WeightsBenchmark.WriteRandomSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl", "hidden_size": {{OutHidden}}, "num_hidden_layers": 1,
             "num_attention_heads": 16, "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 1000, "rms_norm_eps": 1e-06,
             "rope_theta": 1000000.0, "max_position_embeddings": 128000, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu",
             "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "image_token_id": 992, "vision_start_token_id": 989,
             "vision_end_token_id": 990, "video_token_id": 993, "use_sliding_window": false, "sliding_window": 32768, "max_window_layers": 70,
             "vision_config": {"depth": {{depth}}, "hidden_size": {{Embed}}, "intermediate_size": {{Inter}}, "num_heads": {{Heads}}, "hidden_act": "silu",
               "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3, "window_size": 112,
               "fullatt_block_indexes": [{{string.Join(", ", fullAttention)}}], "out_hidden_size": {{OutHidden}}, "tokens_per_second": 2} }
            """);
    }
}
