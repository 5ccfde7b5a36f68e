using System.Collections.Concurrent;
using System.Diagnostics;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Graph;
using LlmBuild.Core.Tests.Mlir;
using LlmBuild.Core.Tests.Quantization;

namespace LlmBuild.Core.Tests.Runtime;

/// <summary>
/// Pre-quantized checkpoints of the example (GPTQ, AWQ, compressed-tensors), built through every stage and run: with
/// act-order (GPTQ desc_act, compressed-tensors actorder=group) the stored inputs of
/// each block linear are permuted, the graph gathers the input by the permutation, and the built model must compute
/// what the source's own dequantized weights compute (the reference forward reads them the same way).
/// </summary>
[TestClass]
public sealed class PreQuantizedBuildTests
{
    private const int Group = 32;
    private static readonly ConcurrentDictionary<(PackedFormat, bool), Lazy<string>> Checkpoints = new();

    private static string Dir(bool actOrder, PackedFormat format = PackedFormat.Gptq) => Checkpoints.GetOrAdd((format, actOrder),
        key => new Lazy<string>(() => PreQuantizedCheckpoint.Create(ExampleBuild.ModelDir, key.Item1, Group, key.Item2))).Value;

    private static ExampleBuild.Built Build(bool actOrder, PackedFormat format = PackedFormat.Gptq) =>
        ExampleBuild.Get("auto", seqLength: 48, groupSize: Group, extra: ("ModelPath", Dir(actOrder, format)));

    private static Dictionary<string, string?> Properties(bool actOrder, int devices, PackedFormat format = PackedFormat.Gptq) => new()
    {
        ["ModelPath"] = Dir(actOrder, format), ["SeqLength"] = "48", ["Quantize"] = "auto", ["QGroupSize"] = Group.ToString(),
        ["Chip"] = "bm1684x", ["LlmModelName"] = "prequantized", ["NumDevice"] = devices.ToString(),
    };

    [TestMethod]
    [DataRow(PackedFormat.Gptq, true)]
    [DataRow(PackedFormat.Gptq, false)]
    [DataRow(PackedFormat.CompressedTensors, true)]
    [DataRow(PackedFormat.CompressedTensors, false)]
    [DataRow(PackedFormat.Awq, false)]
    public void ResolveMarksExactlyTheWeightsWhoseGroupIndexPermutesInputs(PackedFormat format, bool actOrder)
    {
        ResolvedModel model = ExampleBuild.Resolve(Properties(actOrder, 1, format));
        Assert.AreEqual("w4bf16", model.Quantize);
        var entries = model.Owners.SelectMany(o => o.Entries).ToList();
        var linears = entries.Where(e => e.Storage == WeightStorage.Quantized).ToList();
        Assert.AreEqual(7 * model.Config.NumLayers, linears.Count);
        Assert.IsTrue(linears.All(e => e.InputPermuted == actOrder), "every block linear (random group order over K)");
        Assert.IsFalse(entries.Except(linears).Any(e => e.InputPermuted), "embedding, norms, lm_head");
        // The later stages read the mark back from resolved.json.
        string json = Path.Combine(Path.GetTempPath(), $"resolved-{Guid.NewGuid():N}.json");
        File.WriteAllText(json, model.ToJson());
        var loaded = ResolvedModel.Load(json).Owners.SelectMany(o => o.Entries);
        CollectionAssert.AreEqual(entries.Select(e => e.InputPermuted).ToList(), loaded.Select(e => e.InputPermuted).ToList());
        // Dequantized to bf16, the weights are written in source order and nothing is gathered.
        ResolvedModel dense = ExampleBuild.Resolve(new Dictionary<string, string?>(Properties(actOrder, 1, format)) { ["Quantize"] = "bf16" });
        Assert.IsFalse(dense.Owners.SelectMany(o => o.Entries).Any(e => e.InputPermuted));
    }

    [TestMethod]
    [DataRow(PackedFormat.Gptq, true)]
    [DataRow(PackedFormat.Gptq, false)]
    [DataRow(PackedFormat.CompressedTensors, true)]
    [DataRow(PackedFormat.Awq, false)]
    public void PreQuantizedBuildPassesVerifyAgainstTheSourcesDequantizedWeights(PackedFormat format, bool actOrder)
    {
        var built = Build(actOrder, format);
        var lines = new List<string>();
        VerifyReport r = VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, "verify.json"), lines.Add);
        foreach (string l in lines) Console.WriteLine(l);
        Assert.IsTrue(r.Passed, string.Join("\n", r.Failures));
        // The weights are exactly the source's: only bf16 activations separate the build from the f32 reference.
        Assert.IsTrue(r.Logits.MinCosine > 0.999, $"final-logit cosine {r.Logits.MinCosine}");
        Assert.IsTrue(r.Logits.Top1Agreement >= 0.9, $"top-1 {r.Logits.Top1Agreement}");
        int gathers = PieceGraphBuilder.Build(built.Model, built.Model.Piece("block_cache_0")).Ops.Count(o => o.Kind == "top.Gather" && o.Outputs[0].EndsWith(".input", StringComparison.Ordinal));
        Assert.AreEqual(actOrder ? 7 : 0, gathers, "one input gather per permuted linear");
    }

    [TestMethod]
    public void IgnoringThePermutationWouldBeWrong()
    {
        // The same block run with the identity in place of each input_perm: the check above can fail.
        var built = Build(actOrder: true);
        PieceGraph graph = PieceGraphBuilder.Build(built.Model, built.Model.Piece("block_0"));
        using var weights = new NpzWeightSource(Path.Combine(built.Dir, "block_0_top_weights.npz"));
        var inputs = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var random = new Random(3);
        foreach (GraphTensor t in graph.InputTensors)
            inputs[t.Name] = t.Name.Contains("position", StringComparison.Ordinal)
                ? Enumerable.Range(0, (int)t.ElementCount).Select(i => (float)i).ToArray()
                : t.Name.Contains("mask", StringComparison.Ordinal)
                    ? PieceChain.CausalMask((int)t.Shape[^2], (int)t.Shape[^1], 0)
                    : Enumerable.Range(0, (int)t.ElementCount).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var right = new GraphInterpreter(graph, weights).Run(inputs);
        var wrong = new GraphInterpreter(graph, new IdentityPermutations(weights)).Run(inputs);
        double cosine = VerifyStage.Cosine(right[graph.Outputs[0]], wrong[graph.Outputs[0]]);
        Console.WriteLine($"block_0 output with vs without the gather: cosine {cosine:F4}");
        Assert.IsTrue(cosine < 0.99, $"without the gather the block output still has cosine {cosine}");
    }

    private sealed class IdentityPermutations(IWeightSource inner) : IWeightSource
    {
        public float[] ReadFloat(string key)
        {
            float[] v = inner.ReadFloat(key);
            return key.EndsWith(".input_perm", StringComparison.Ordinal) ? Enumerable.Range(0, v.Length).Select(i => (float)i).ToArray() : v;
        }

        public byte[] ReadBytes(string key) => inner.ReadBytes(key);
    }

    [TestMethod]
    public void ActOrderModulesAreValidTopDialect()
    {
        var built = Build(actOrder: true);
        var dialect = new TopDialect();
        var problems = new List<string>();
        foreach (Piece piece in built.Model.Pieces)
        {
            PieceGraph graph = PieceGraphBuilder.Build(built.Model, piece);
            foreach (GraphOp op in graph.Ops) problems.AddRange(dialect.Check(op, graph));
        }
        Assert.AreEqual(0, problems.Count, string.Join("\n", problems.Distinct().Take(20)));
        string mlir = Path.Combine(built.Dir, "block_0.mlir");
        StringAssert.Contains(File.ReadAllText(mlir), "\"top.Gather\"");
        var psi = new ProcessStartInfo("/usr/bin/mlir-opt-16", ["--allow-unregistered-dialect", "--mlir-print-op-generic", mlir, "-o", "/dev/null"])
        {
            RedirectStandardError = true,
        };
        using var process = Process.Start(psi)!;
        string stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.AreEqual(0, process.ExitCode, stderr);
    }

    [TestMethod]
    public void TensorParallelismRefusesActOrderRowSplitsAndTakesSequentialGptq()
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(Properties(actOrder: true, devices: 2)));
        Assert.AreEqual(ErrorCodes.TensorParallelPermuted, e.Code);
        StringAssert.Contains(e.Message, "o_proj");
        Assert.AreEqual(2, ExampleBuild.Resolve(Properties(actOrder: false, devices: 2)).Options.NumDevice);
    }

    [TestMethod]
    public void ReferenceReadsPackedWeightsAsTheSourceDequantizesThem()
    {
        // The reference forward of the GPTQ checkpoint against the dense one it was made from: 4-bit round-to-nearest
        // error only (with the permutation undone; a scrambled input order would destroy the agreement).
        using ICheckpoint dense = CheckpointLoader.Open(ExampleBuild.ModelDir);
        using ICheckpoint gptq = CheckpointLoader.Open(Dir(actOrder: true));
        var a = new ReferenceModel(dense, Core.Models.ModelConfig.Load(ExampleBuild.ModelDir));
        var b = new ReferenceModel(gptq, Core.Models.ModelConfig.Load(Dir(actOrder: true)));
        int[] ids = [9707, 11, 1879, 374, 264, 1273];
        double cosine = VerifyStage.Cosine(a.Forward(ids), b.Forward(ids));
        Console.WriteLine($"GPTQ (act-order, 4-bit g{Group}) vs dense reference logits: cosine {cosine:F4}");
        Assert.IsTrue(cosine > 0.97, $"GPTQ vs dense reference logits cosine {cosine}");
    }
}
