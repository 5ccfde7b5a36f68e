using System.Globalization;
using System.Text.RegularExpressions;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;

namespace LlmBuild.Core.Tests.Codegen;

/// <summary>Codegen's only input is the piece's MLIR module and the weight file it names.</summary>
[TestClass]
public sealed class MlirCompileTests
{
    public TestContext TestContext { get; set; } = null!;

    /// <summary>
    /// The option combinations the tests build: every piece of each was checked by <see cref="MlirCompileCheck"/> —
    /// its module round-trips and its bmodel is byte-identical to one compiled from the graph builder's graph.
    /// </summary>
    [TestMethod]
    public void EveryOptionCombinationCompilesFromItsModuleAsFromTheBuilder()
    {
        ExampleBuild.Built[] builds =
        [
            ExampleBuild.Get("bf16"),
            ExampleBuild.Get("w4bf16"),
            ExampleBuild.Get("w8bf16"),
            ExampleBuild.Get("w4bf16", chip: "bm1688"),
            ExampleBuild.Get("bf16", 64, 64, "bm1684x", ("NumDevice", "2")),
            ExampleBuild.Get("w4bf16", 64, 32, "bm1684x", ("NumDevice", "2")),
            ExampleBuild.Get("bf16", seqLength: 48, extra: ("Dynamic", "true")),
            ExampleBuild.Get("bf16", seqLength: 48, extra: ("DoSample", "true")),
            ExampleBuild.Get("bf16", seqLength: 48, extra: ("LoraMaxRank", "4")),
            ExampleBuild.Get("bf16", seqLength: 48, extra: [("SharePrompt", "true"), ("MaxPrefillKvLength", "16")]),
            ExampleBuild.Get("bf16", seqLength: 48, extra: ("UseBlockWithKv", "true")),
            ExampleBuild.Get("bf16", seqLength: 48, extra: ("Batch", "2")),
            ExampleBuild.Get("bf16", seqLength: 48, extra: ("EmbeddingDisk", "true")),
        ];
        foreach (var built in builds)
            foreach (var (piece, bmodel) in built.PieceBModels)
                Assert.IsTrue(MlirCompileCheck.Checked.Contains(bmodel), $"{piece} of {built.Dir} was not checked");
    }

    [TestMethod]
    public void CodegenNeverBuildsTheGraphItself()
    {
        string core = Path.Combine(ExampleBuild.RepoRoot, "src", "LlmBuild.Core");
        var files = Directory.GetFiles(Path.Combine(core, "Codegen"), "*.cs").Append(Path.Combine(core, "Stages", "CompileStage.cs"));
        foreach (string file in files)
            Assert.IsFalse(File.ReadAllText(file).Contains("PieceGraphBuilder", StringComparison.Ordinal), $"{file} uses the graph builder");
    }

    private string CopyPiece(ExampleBuild.Built built, string piece)
    {
        string dir = Path.Combine(TestContext.TestRunDirectory ?? Path.GetTempPath(), "mlir-compile", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(built.Dir, piece + ".mlir"), Path.Combine(dir, piece + ".mlir"));
        File.Copy(Path.Combine(built.Dir, piece + "_top_weights.npz"), Path.Combine(dir, piece + "_top_weights.npz"));
        return dir;
    }

    private static string Compile(ExampleBuild.Built built, string piece, string mlirPath)
    {
        var (file, blob) = CompileStage.Build(built.Model, built.Model.Piece(piece), mlirPath);
        string path = Path.ChangeExtension(mlirPath, ".bmodel");
        BModelWriter.WriteFile(path, file, blob);
        return path;
    }

    private static Dictionary<string, float[]> Run(string bmodel, string net, IReadOnlyDictionary<string, float[]> inputs)
    {
        using var rt = EmulatorRuntime.Load(bmodel);
        EmulatorNet n = rt.Net(net);
        for (int i = 0; i < n.Inputs.Count; i++)
        {
            NetTensor t = n.Inputs[i];
            float[] values = inputs[t.Name];
            if (t.DType == BModelDataType.Int32) rt.Memory.Write(n.InputMems[i], (ReadOnlySpan<int>)values.Select(v => (int)v).ToArray());
            else rt.WriteFloat(n.InputMems[i], t.DType, values);
        }
        rt.Launch(n);
        return Enumerable.Range(0, n.Outputs.Count).ToDictionary(o => n.Outputs[o].Name, o => rt.ReadFloat(n.OutputMems[o], n.Outputs[o].DType, n.Outputs[o].Count));
    }

    private static float Bf16(double value) => FloatFormats.BFloat16ToFloatScalar(FloatFormats.FloatToBFloat16Scalar((float)value));

    [TestMethod]
    public void AWeightScaledByTwoInTheWeightFileDoublesTheOutput()
    {
        var built = ExampleBuild.Get("bf16");
        string dir = CopyPiece(built, "embedding");
        string mlir = Path.Combine(dir, "embedding.mlir"), npzPath = Path.Combine(dir, "embedding_top_weights.npz");
        long length = built.Model.PrefillLength;
        var ids = new Dictionary<string, float[]> { ["input_ids"] = Enumerable.Range(0, (int)length).Select(i => (float)(i * 997 % 151936)).ToArray() };
        float[] before = Run(Compile(built, "embedding", mlir), "embedding", ids)["embedding"];

        string key = MlirReader.ReadFile(mlir).Graph.Weights.Single().Key;
        byte[] scaled;
        long[] shape;
        using (var npz = new NpzReader(npzPath))
        {
            shape = npz.GetEntry(key).Shape;
            var bits = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(npz.ReadBytes(key)).ToArray();
            for (int i = 0; i < bits.Length; i++) bits[i] = FloatFormats.FloatToBFloat16Scalar(2 * FloatFormats.BFloat16ToFloatScalar(bits[i]));
            scaled = System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
        }
        using (var stream = File.Create(npzPath))
        using (var npz = new NpzWriter(stream))
        {
            npz.Add(key, NpyFormat.UInt16, shape, scaled);
            npz.Finish();
        }
        float[] after = Run(Compile(built, "embedding", mlir), "embedding", ids)["embedding"];
        Assert.IsTrue(before.Any(v => v != 0));
        for (int i = 0; i < before.Length; i++) Assert.AreEqual(2 * before[i], after[i], $"element {i}");
    }

    /// <summary>
    /// An op attribute edited in block_0's module changes the compiled net, and the emulator computes what the
    /// interpreter computes for the edited graph.
    /// </summary>
    [TestMethod]
    [DataRow("model.layers.0.input_layernorm", "eps", "100.0", "k_cache")]
    [DataRow("k_cache.neg", "const_val", "-2.0", "k_cache")]
    [DataRow("model.layers.0.self_attn.q_rope.neg", "const_val", "-3.0", "output_states")]
    public void AnEditedOpAttributeChangesTheCompiledNet(string op, string attribute, string value, string output)
    {
        var built = ExampleBuild.Get("bf16");
        string dir = CopyPiece(built, "block_0");
        string mlir = Path.Combine(dir, "block_0.mlir");
        var rng = new Random(11);
        var graph = MlirReader.ReadFile(mlir).Graph;
        var inputs = new Dictionary<string, float[]>();
        foreach (GraphTensor t in graph.InputTensors)
        {
            var v = new float[t.ElementCount];
            long keys = t.Shape[^1];
            for (long i = 0; i < v.Length; i++)
                v[i] = t.Name switch
                {
                    "position_ids" => i,
                    "attention_mask" => i % keys <= i / keys ? 0 : NetContract.MaskFill,
                    _ => Bf16(rng.NextDouble() * 2 - 1),
                };
            inputs[t.Name] = v;
        }
        float[] before = Run(Compile(built, "block_0", mlir), "block_0", inputs)[output];

        string text = File.ReadAllText(mlir);
        var line = new Regex($@"^.*loc\(""{Regex.Escape(op)}""\)$", RegexOptions.Multiline).Match(text);
        Assert.IsTrue(line.Success, op);
        string edited = Regex.Replace(line.Value, $@"{attribute} = [^ ]+ : f64", $"{attribute} = {value} : f64");
        Assert.AreNotEqual(line.Value, edited);
        File.WriteAllText(mlir, text.Replace(line.Value, edited));
        float[] after = Run(Compile(built, "block_0", mlir), "block_0", inputs)[output];

        // The interpreter runs the edited module's graph (its constants' values read from the weight file).
        PieceGraph read = MlirReader.ReadFile(mlir).Graph;
        Assert.AreEqual(double.Parse(value, CultureInfo.InvariantCulture), read.Ops.Single(o => o.Outputs[0] == op).Float(attribute));
        using var weights = new NpzWeightSource(Path.Combine(dir, "block_0_top_weights.npz"));
        var withData = new PieceGraph(read.Piece, read.Platform, read.Dynamic, read.TensorList, read.Inputs, read.Outputs, read.Weights,
            read.Constants.Select(c => c with { Data = weights.ReadFloat(c.Key) }).ToArray(), read.Ops);
        float[] expected = new GraphInterpreter(withData, weights).Run(inputs)[output];
        double changed = RelativeDifference(after, before), agrees = VerifyStage.Cosine(after, expected);
        Assert.IsTrue(changed > 0.01, $"the edit changed {output} by only {changed} (max |after − before| / max |before|)");
        Assert.IsTrue(agrees > 0.9999, $"the emulator and the interpreter disagree on the edited module: cosine {agrees}");
    }

    private static double RelativeDifference(float[] actual, float[] expected)
    {
        double diff = 0, scale = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            diff = Math.Max(diff, Math.Abs((double)actual[i] - expected[i]));
            scale = Math.Max(scale, Math.Abs((double)expected[i]));
        }
        return diff / scale;
    }

    /// <summary>An lm_head written by hand in the top dialect (not by the exporter) compiles and runs in the emulator.</summary>
    [TestMethod]
    public void AModuleWrittenByHandCompilesAndRuns()
    {
        var built = ExampleBuild.Get("bf16");
        int hidden = built.Model.Config.HiddenSize, vocab = built.Model.Config.VocabSize;
        string dir = Path.Combine(TestContext.TestRunDirectory ?? Path.GetTempPath(), "mlir-compile", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        string w = $"tensor<{vocab}x{hidden}xbf16>", x = $"tensor<1x{hidden}xf32>", logits = $"tensor<1x{vocab}xf32>";
        string text = $$"""
            // lm_head by hand: named values, no top.None, aliased and missing locations.
            module @lm_head attributes {llmbuild.piece_kind = "LmHead", module.platform = "LLM", module.weight_file = "head.npz"} {
              func.func @main(%hidden: {{x}}) -> tensor<1x1xf32> {
                %h = "top.Input"(%hidden) : ({{x}}) -> {{x}} loc(#states)
                %table = "top.Weight"() : () -> {{w}} loc("head.weight")
                %nothing = "top.None"() : () -> none
                %scores = "top.MatMul"(%h, %table, %nothing) {right_transpose = true} : ({{x}}, {{w}}, none) -> {{logits}}
                %best:2 = "top.TopK"(%scores) {K = 1 : i64, axis = 1 : i64} : ({{logits}}) -> (tensor<1x1xf32>, tensor<1x1xf32>) loc(fused["best_value", "token_id"])
                return %best#1 : tensor<1x1xf32>
              }
            }
            #states = loc("hidden_states")
            """;
        File.WriteAllText(Path.Combine(dir, "lm_head.mlir"), text);
        var rng = new Random(5);
        var table = new ushort[(long)vocab * hidden];
        for (int i = 0; i < table.Length; i++) table[i] = FloatFormats.FloatToBFloat16Scalar((float)(rng.NextDouble() * 2 - 1));
        using (var stream = File.Create(Path.Combine(dir, "head.npz")))
        using (var npz = new NpzWriter(stream))
        {
            npz.AddBFloat16("head.weight", table, [vocab, hidden]);
            npz.Finish();
        }
        float[] states = Enumerable.Range(0, hidden).Select(_ => Bf16(rng.NextDouble() * 2 - 1)).ToArray();
        float token = Run(Compile(built, "lm_head", Path.Combine(dir, "lm_head.mlir")), "lm_head", new Dictionary<string, float[]> { ["hidden_states"] = states })["token_id"][0];

        int best = 0;
        double bestScore = double.NegativeInfinity;
        for (int r = 0; r < vocab; r++)
        {
            double score = 0;
            for (int c = 0; c < hidden; c++) score += states[c] * (double)FloatFormats.BFloat16ToFloatScalar(table[(long)r * hidden + c]);
            if (score > bestScore) (best, bestScore) = (r, score);
        }
        Assert.AreEqual(best, (int)token);
    }

    [TestMethod]
    [DataRow(@"\{eps = [^}]+\}", "", "has no attribute 'eps'")]
    [DataRow(@"""top.RMSNorm""\((%[0-9]+), (%[0-9]+)\) \{eps = [^}]+\} : \((tensor<[^>]+>), (tensor<[^>]+>)\)", "\"top.RMSNorm\"($1) : ($3)", "cannot lower")]
    public void AModuleTheBackendCannotLowerIsACodedError(string pattern, string replacement, string message)
    {
        var built = ExampleBuild.Get("bf16");
        string dir = CopyPiece(built, "block_0");
        string mlir = Path.Combine(dir, "block_0.mlir");
        File.WriteAllText(mlir, new Regex(pattern).Replace(File.ReadAllText(mlir), replacement, 1));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => CompileStage.Build(built.Model, built.Model.Piece("block_0"), mlir));
        Assert.AreEqual(ErrorCodes.CodegenUnsupported, e.Code, e.Message);
        StringAssert.Contains(e.Message, message);
        StringAssert.Contains(e.Message, mlir);
    }

    [TestMethod]
    public void AModuleOfAnotherPieceOrWithoutItsWeightFileIsStale()
    {
        var built = ExampleBuild.Get("bf16");
        string dir = CopyPiece(built, "embedding");
        string mlir = Path.Combine(dir, "embedding.mlir");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => CompileStage.Build(built.Model, built.Model.Piece("embedding_cache"), mlir));
        Assert.AreEqual(ErrorCodes.StaleIntermediate, e.Code);
        StringAssert.Contains(e.Message, "module of embedding, not of piece embedding_cache");
        e = Assert.ThrowsExactly<LlmBuildException>(() => CompileStage.Build(built.Model, built.Model.Piece("embedding"), mlir, Path.Combine(dir, "other.npz")));
        Assert.AreEqual(ErrorCodes.StaleIntermediate, e.Code);
        File.Delete(Path.Combine(dir, "embedding_top_weights.npz"));
        e = Assert.ThrowsExactly<LlmBuildException>(() => CompileStage.Build(built.Model, built.Model.Piece("embedding"), mlir));
        Assert.AreEqual(ErrorCodes.StaleIntermediate, e.Code);
        StringAssert.Contains(e.Message, "which is missing");
    }
}
