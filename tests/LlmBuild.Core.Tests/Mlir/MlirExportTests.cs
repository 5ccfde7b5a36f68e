using System.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Mlir;

[TestClass]
public sealed class MlirExportTests
{
    private const string MlirOpt = "/usr/bin/mlir-opt-16";

    private static IEnumerable<(TestScenarios.Scenario? Scenario, PieceGraph Graph)> AllGraphs() =>
        TestScenarios.All.SelectMany(s => TestScenarios.Pieces(s).Select(p => ((TestScenarios.Scenario?)s, PieceGraphBuilder.Build(s.Model, p))))
            .Concat(FamilyGraphs());

    /// <summary>Every piece of every family fixture, at bf16 and w4bf16 (the families' own ops: GELU, Tanh, Permute, windows…).</summary>
    private static IEnumerable<(TestScenarios.Scenario? Scenario, PieceGraph Graph)> FamilyGraphs()
    {
        string root = Path.Combine(Codegen.ExampleBuild.RepoRoot, "tests", "fixtures", "families");
        foreach (string dir in Directory.GetDirectories(root).Order(StringComparer.Ordinal))
        {
            string modelType = Path.GetFileName(dir);
            if (!Core.Models.ModelFamilies.SupportedModelTypes.Contains(modelType)) continue;
            foreach (string quantize in new[] { "bf16", "w4bf16" })
            {
                var props = new Dictionary<string, string?> { ["ModelPath"] = dir, ["SeqLength"] = "32", ["Quantize"] = quantize, ["QGroupSize"] = "32" };
                var model = Core.Stages.ResolveStage.Resolve(props, new List<Core.Diagnostics.LlmBuildWarning>());
                foreach (Piece piece in model.Pieces) yield return (null, PieceGraphBuilder.Build(model, piece));
            }
        }
    }

    [TestMethod]
    public void EveryOpAndAttributeExistsInTheTopDialect()
    {
        var dialect = new TopDialect();
        var problems = new List<string>();
        int ops = 0;
        foreach (var (_, graph) in AllGraphs())
            foreach (GraphOp op in graph.Ops)
            {
                ops++;
                problems.AddRange(dialect.Check(op, graph));
            }
        Assert.IsTrue(ops > 1000, $"only {ops} ops checked");
        Assert.AreEqual(0, problems.Count, string.Join("\n", problems.Distinct().Take(40)));
    }

    [TestMethod]
    public void TheCheckerRejectsBadOps()
    {
        var dialect = new TopDialect();
        var model = TestScenarios.All[0].Model;
        PieceGraph graph = PieceGraphBuilder.Build(model, model.Piece("lm_head"));
        GraphOp matmul = graph.Ops.First(o => o.Kind == "top.MatMul");
        Assert.AreEqual(0, dialect.Check(matmul, graph).Count);
        Assert.AreEqual(1, dialect.Check(matmul with { Kind = "top.MatMull" }, graph).Count);
        Assert.IsTrue(dialect.Check(matmul with { Attributes = [.. matmul.Attributes, OpAttr.I64("right_transpose", 1)] }, graph)
            .Any(p => p.Contains("right_transpose")));
        Assert.IsTrue(dialect.Check(matmul with { Inputs = [matmul.Inputs[0], ""] }, graph).Count > 0);
        GraphOp topk = graph.Ops.First(o => o.Kind == "top.TopK");
        Assert.IsTrue(dialect.Check(topk with { Attributes = [] }, graph).Any(p => p.Contains("required attribute 'axis'")));
        Assert.IsTrue(dialect.Check(topk with { Inputs = [topk.Inputs[0], ""] }, graph).Any(p => p.Contains("Optional")));
    }

    [TestMethod]
    public void SupplementOpsAreMissingFromTheFixture()
    {
        // When top_ops.json is regenerated from a TopOps.td that has these ops, drop them from TopDialect.Supplement.
        var dialect = new TopDialect();
        foreach (string op in dialect.SupplementOps) Assert.IsFalse(dialect.FixtureHas(op), op + " is now in top_ops.json");
    }

    [TestMethod]
    public void EveryExportedModuleParsesWithMlirOpt()
    {
        Assert.IsTrue(File.Exists(MlirOpt), $"{MlirOpt} is missing: install Debian's mlir-16-tools (.ci/run does).");
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-mlir-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            // One mlir-opt run over all modules, separated as --split-input-file expects.
            var modules = AllGraphs().Select(x => MlirWriter.Write(x.Graph, x.Graph.Name + "_top_weights.npz")).ToList();
            string path = Path.Combine(dir, "all.mlir");
            File.WriteAllText(path, string.Join("\n// -----\n", modules));
            var psi = new ProcessStartInfo(MlirOpt, ["--allow-unregistered-dialect", "--split-input-file", "--mlir-print-op-generic", path, "-o", Path.Combine(dir, "out.mlir")])
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            using var process = Process.Start(psi)!;
            string stderr = process.StandardError.ReadToEnd();
            process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            Assert.AreEqual(0, process.ExitCode, stderr.Length > 4000 ? stderr[..4000] : stderr);
            string output = File.ReadAllText(Path.Combine(dir, "out.mlir"));
            Assert.AreEqual(modules.Count, output.Split("\"builtin.module\"").Length - 1);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void OutputIsDeterministic()
    {
        var s = TestScenarios.All[1];
        foreach (Piece piece in s.Model.Pieces.Where(p => p.Layer <= 0))
        {
            string a = MlirWriter.Write(PieceGraphBuilder.Build(s.Model, piece), "w.npz");
            string b = MlirWriter.Write(PieceGraphBuilder.Build(s.Model, piece), "w.npz");
            Assert.AreEqual(a, b, piece.Name);
        }
    }

    [TestMethod]
    public void QuantizedBlockTextHasTheTpuMlirShape()
    {
        var model = TestScenarios.All[1].Model; // w4bf16, g32
        string text = MlirWriter.Write(PieceGraphBuilder.Build(model, model.Piece("block_0")), "block_0_top_weights.npz");
        StringAssert.StartsWith(text, "module @\"block_0\" attributes {module.chip = \"ALL\", module.platform = \"LLM_QUANTIZED\", " +
            "module.state = \"TOP_F32\", module.top_run_mode = \"STATIC\", module.weight_file = \"block_0_top_weights.npz\"} {\n");
        StringAssert.Contains(text, "func.func @main(%arg0: tensor<1x64x64xf32> loc(unknown), %arg1: tensor<1x64xsi32> loc(unknown), " +
            "%arg2: tensor<1x1x64x64xf32> loc(unknown)) -> (tensor<1x64x64xf32>, tensor<1x64x2x16xf32>, tensor<1x64x2x16xf32>)");
        StringAssert.Contains(text, "= \"top.Weight\"() : () -> tensor<64x32xui8> loc(\"model.layers.0.self_attn.q_proj.qweight\")");
        StringAssert.Contains(text, "= \"top.Weight\"() : () -> tensor<64x2xf32> loc(\"model.layers.0.self_attn.q_proj.scales\")");
        StringAssert.Contains(text, "= \"top.Weight\"() : () -> tensor<64xbf16> loc(\"model.layers.0.self_attn.q_proj.bias\")");
        StringAssert.Contains(text, "= \"top.Weight\"() : () -> tensor<64x1x16xf32> loc(\"rotary_cos.weight\")");
        StringAssert.Contains(text, "{q_group_size = 32 : i64, right_transpose = true, weight_bits = 4 : i64} : " +
            "(tensor<1x64x64xf32>, tensor<64x32xui8>, tensor<64x2xf32>, tensor<64x2xui8>, tensor<64xbf16>) -> tensor<1x64x64xf32> loc(\"model.layers.0.self_attn.q_proj\")");
        StringAssert.Contains(text, "\"top.FAttention\"");
        StringAssert.Contains(text, "{batch = 1 : i64, dim = 16 : i64, kv_head = 2 : i64, mk = 64 : i64, mq = 64 : i64, q_head = 4 : i64, scale = 0.25 : f64}");
        StringAssert.EndsWith(text, "  } loc(unknown)\n} loc(unknown)\n");
    }
}
