using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>Model + option combinations the graph and MLIR tests run over: every piece kind and option at least once.</summary>
internal static class TestScenarios
{
    public sealed record Scenario(string Name, ResolvedModel Model, bool AllLayers);

    private static readonly Lazy<IReadOnlyList<Scenario>> Cached = new(Create);

    public static IReadOnlyList<Scenario> All => Cached.Value;

    /// <summary>The pieces a test exercises: every piece, or for big real configs only the first and last layer's blocks.</summary>
    public static IEnumerable<Piece> Pieces(Scenario s) => s.AllLayers
        ? s.Model.Pieces
        : s.Model.Pieces.Where(p => p.Layer < 0 || p.Layer == 0 || p.Layer == s.Model.Config.NumLayers - 1);

    private static List<Scenario> Create()
    {
        string tiny = TestResolver.TinyModelDir;
        var list = new List<Scenario>
        {
            new("tiny-bf16", TestResolver.Resolve(tiny, TestResolver.Options(tiny)), true),
            new("tiny-w4bf16-g32-qlmhead", TestResolver.Resolve(tiny, TestResolver.Options(tiny) with { Quantize = "w4bf16", QGroupSize = 32 }, quantizeLmHead: true), true),
            new("tiny-w8f16-g0-sample-batch2-input16", TestResolver.Resolve(tiny, TestResolver.Options(tiny) with
                { Quantize = "w8f16", QGroupSize = 0, DoSample = true, Batch = 2, MaxInputLength = 16 }), true),
            new("tiny-dynamic-kv", TestResolver.Resolve(tiny, TestResolver.Options(tiny) with
                { Dynamic = true, UseHistoryKv = true, MaxInputLength = 16, MaxPrefillKvLength = 32 }), true),
            new("tiny-shareprompt-lora-embdisk", TestResolver.Resolve(tiny, TestResolver.Options(tiny) with
                { SharePrompt = true, MaxPrefillKvLength = 24, MaxInputLength = 8, LoraMaxRank = 4, EmbeddingDisk = true }), true),
            new("tiny-2dev", TestResolver.Resolve(tiny, TestResolver.Options(tiny) with { NumDevice = 2 }), true),
        };
        (string Dir, BuildOptions Options)[] real =
        [
            ("qwen2.5-7b-instruct", new BuildOptions { ModelPath = "", SeqLength = 512, Quantize = "w4bf16", QGroupSize = 128 }),
            ("qwen3-4b", new BuildOptions { ModelPath = "", SeqLength = 1024, Quantize = "w8bf16", QGroupSize = 64, MaxInputLength = 256 }),
            ("llama3.2-3b-instruct", new BuildOptions { ModelPath = "", SeqLength = 256, Quantize = "bf16", DoSample = true }),
            ("llama2-7b-chat", new BuildOptions { ModelPath = "", SeqLength = 256, Quantize = "w4f16", QGroupSize = 128 }),
            ("configs/Qwen1.5-0.5B-Chat", new BuildOptions { ModelPath = "", SeqLength = 512, Quantize = "w4bf16", QGroupSize = 64 }),
            ("configs/Qwen1.5-1.8B-Chat", new BuildOptions { ModelPath = "", SeqLength = 512, Quantize = "bf16" }),
            ("configs/Qwen1.5-4B-Chat", new BuildOptions { ModelPath = "", SeqLength = 512, Quantize = "w8bf16", QGroupSize = 0 }),
            ("configs/Qwen1.5-7B-Chat", new BuildOptions { ModelPath = "", SeqLength = 512, Quantize = "w4bf16", QGroupSize = 128 }),
            ("configs/Qwen2-72B-Instruct", new BuildOptions { ModelPath = "", SeqLength = 256, Quantize = "w4bf16", QGroupSize = 128, NumDevice = 2 }),
        ];
        foreach (var (dir, options) in real)
        {
            string path = TestResolver.Fixture(dir);
            list.Add(new(Path.GetFileName(dir), TestResolver.Resolve(path, options with { ModelPath = path }), false));
        }
        // Mixture-of-experts families, resolved by the real resolver from checkpoints on disk (this stand-in lays out no
        // experts): qwen2_moe's fixture (shared expert, top-k not renormalised) and the scaled-down qwen3_moe
        // (renormalised top-k, a dense layer), with batch-2 decode.
        list.Add(new("qwen2_moe-w4bf16-g32", Codegen.ExampleBuild.Resolve(new Dictionary<string, string?>
        {
            ["ModelPath"] = TestResolver.Fixture("families/qwen2_moe"), ["SeqLength"] = "64", ["Quantize"] = "w4bf16", ["QGroupSize"] = "32",
        }), true));
        list.Add(new("qwen3_moe-w8bf16-batch2", Codegen.ExampleBuild.Resolve(new Dictionary<string, string?>
        {
            ["ModelPath"] = Families.MoeCheckpoints.Qwen3MoeDir, ["SeqLength"] = "64", ["Quantize"] = "w8bf16", ["QGroupSize"] = "32",
            ["Batch"] = "2", ["MaxInputLength"] = "16",
        }), true));
        return list;
    }
}
