using System.Diagnostics;
using System.Text;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Mlir;

[TestClass]
public sealed class MlirReaderTests
{
    /// <summary>Every piece of every scenario (families, quantization, act-order, options): write → read → write is the same text.</summary>
    [TestMethod]
    public void EveryScenarioPieceRoundTrips()
    {
        int pieces = 0;
        foreach (var s in TestScenarios.All)
            foreach (Piece piece in TestScenarios.Pieces(s))
            {
                PieceGraph built = PieceGraphBuilder.Build(s.Model, piece);
                string text = MlirWriter.Write(built, piece.Name + "_top_weights.npz");
                MlirPieceModule read = MlirReader.Read(text, $"{s.Name}/{piece.Name}.mlir");
                Assert.AreEqual(text, MlirWriter.Write(read.Graph, read.WeightFile), $"{s.Name} {piece.Name}");
                Assert.AreEqual(piece.Kind, read.Graph.Piece.Kind);
                CollectionAssert.AreEqual(built.Inputs.ToArray(), read.Graph.Inputs.ToArray());
                CollectionAssert.AreEqual(built.Weights.Select(w => w.Key).ToArray(), read.Graph.Weights.Select(w => w.Key).ToArray());
                CollectionAssert.AreEqual(built.Constants.Select(c => c.Key).ToArray(), read.Graph.Constants.Select(c => c.Key).ToArray());
                Assert.AreEqual(built.Ops.Count, read.Graph.Ops.Count);
                pieces++;
            }
        Assert.IsTrue(pieces > 100, $"only {pieces} pieces");
    }

    private const string HandWritten = """
        // Written by hand: named SSA values, attributes in any order, locations missing or aliased.
        module @lm_head attributes {module.weight_file = "head.npz", module.platform = "LLM", llmbuild.piece_kind = "LmHead"} {
          func.func @main(%h: tensor<1x8xf32>) -> tensor<1x1xf32> {
            %x = "top.Input"(%h) : (tensor<1x8xf32>) -> tensor<1x8xf32> loc(#in)
            %w = "top.Weight"() : () -> tensor<5x8xbf16> loc("head.weight")
            %none = "top.None"() : () -> none
            %logits = "top.MatMul"(%x, %w, %none) {right_transpose = true, do_relu = false} : (tensor<1x8xf32>, tensor<5x8xbf16>, none) -> tensor<1x5xf32> loc("logits")
            %top:2 = "top.TopK"(%logits) {axis = 1 : i64, K = 1 : i64} : (tensor<1x5xf32>) -> (tensor<1x1xf32>, tensor<1x1xf32>) loc(fused["token_value", "token_id"])
            return %top#1 : tensor<1x1xf32>
          }
        }
        #in = loc("hidden_states")
        """;

    [TestMethod]
    public void ReadsAModuleWrittenByHand()
    {
        MlirPieceModule m = MlirReader.Read(HandWritten, "hand.mlir");
        PieceGraph g = m.Graph;
        Assert.AreEqual("head.npz", m.WeightFile);
        Assert.AreEqual("lm_head", g.Name);
        Assert.AreEqual(PieceKind.LmHead, g.Piece.Kind);
        Assert.AreEqual("LLM", g.Platform);
        Assert.IsFalse(g.Dynamic);
        CollectionAssert.AreEqual(new[] { "hidden_states" }, g.Inputs.ToArray());
        CollectionAssert.AreEqual(new[] { "token_id" }, g.Outputs.ToArray());
        Assert.AreEqual("head.weight", g.Weights.Single().Key);
        CollectionAssert.AreEqual(new long[] { 5, 8 }, g.Weights.Single().Shape);
        GraphOp matmul = g.Ops[0];
        CollectionAssert.AreEqual(new[] { "hidden_states", "head.weight", "" }, matmul.Inputs.ToArray());
        CollectionAssert.AreEqual(new[] { "do_relu", "right_transpose" }, matmul.Attributes.Select(a => a.Name).ToArray(), "attributes are sorted");
        GraphOp topK = g.Ops[1];
        Assert.AreEqual(AttrKind.I64, topK.Attr("K").Kind);
        CollectionAssert.AreEqual(new[] { "token_value", "token_id" }, topK.Outputs.ToArray());
    }

    [TestMethod]
    public void ReadsEveryAttributeKindTheWriterWrites()
    {
        string text = HandWritten.Replace("{right_transpose = true, do_relu = false}",
            "{a = true, b = -3 : i64, c = 7 : i32, d = -2 : si32, e = 1.5e-06 : f64, f = \"Less\\22q\\\\\", g = [1 : i64, -2 : i64], h = [0.5 : f64], i = [], right_transpose = true}");
        GraphOp op = MlirReader.Read(text, "attrs.mlir").Graph.Ops[0];
        Assert.IsTrue(op.Attr("a").Bool);
        Assert.AreEqual((AttrKind.I64, -3L), (op.Attr("b").Kind, op.Attr("b").Int));
        Assert.AreEqual((AttrKind.I32, 7L), (op.Attr("c").Kind, op.Attr("c").Int));
        Assert.AreEqual((AttrKind.SI32, -2L), (op.Attr("d").Kind, op.Attr("d").Int));
        Assert.AreEqual(1.5e-6, op.Float("e"));
        Assert.AreEqual("Less\"q\\", op.Attr("f").Str);
        CollectionAssert.AreEqual(new long[] { 1, -2 }, op.Attr("g").Ints);
        CollectionAssert.AreEqual(new[] { 0.5 }, op.Attr("h").Floats);
        Assert.AreEqual(0, op.Attr("i").Ints!.Length);
    }

    [TestMethod]
    [DataRow("\"top.MatMul\"(", "top.MatMul(", ErrorCodes.MlirSyntax, "line 7, column 15")]
    [DataRow("tensor<5x8xbf16>", "tensor<5x8xi64>", ErrorCodes.MlirUnsupportedType, "line 5, column ")]
    [DataRow("tensor<1x5xf32> loc(\"logits\")", "tensor<?x5xf32> loc(\"logits\")", ErrorCodes.MlirUnsupportedType, "dynamic dimension")]
    [DataRow("do_relu = false", "do_relu = dense<1.0> : tensor<1xf32>", ErrorCodes.MlirUnsupportedAttribute, "line 7, column")]
    [DataRow("do_relu = false", "do_relu", ErrorCodes.MlirUnsupportedAttribute, "unit attributes")]
    [DataRow("K = 1 : i64", "K = 1 : i8", ErrorCodes.MlirUnsupportedAttribute, "i8")]
    [DataRow("K = 1 : i64", "K = 99999999999999999999 : i64", ErrorCodes.MlirLimit, "does not fit")]
    [DataRow("\"top.MatMul\"(%x, %w, %none)", "\"top.MatMul\"(%y, %w, %none)", ErrorCodes.MlirUndefinedValue, "%y is used before it is defined")]
    [DataRow("return %top#1", "return %top#2", ErrorCodes.MlirUndefinedValue, "%top#2")]
    [DataRow("(tensor<1x8xf32>, tensor<5x8xbf16>, none)", "(tensor<1x8xf32>, tensor<5x8xf16>, none)", ErrorCodes.MlirTypeMismatch, "%w is tensor<5x8xbf16>")]
    [DataRow("fused[\"token_value\", \"token_id\"]", "fused[\"token_id\"]", ErrorCodes.MlirTypeMismatch, "location names 1")]
    [DataRow("module.weight_file = \"head.npz\", ", "", ErrorCodes.MlirBadModule, "module.weight_file")]
    [DataRow("llmbuild.piece_kind = \"LmHead\"", "llmbuild.piece_kind = \"Head\"", ErrorCodes.MlirBadModule, "is not a piece kind")]
    [DataRow("loc(\"head.weight\")", "", ErrorCodes.MlirBadModule, "no location name")]
    [DataRow("loc(\"logits\")", "loc(\"hidden_states\")", ErrorCodes.MlirBadModule, "given twice")]
    [DataRow("func.func @main", "func.func @forward", ErrorCodes.MlirBadModule, "@forward")]
    [DataRow("#in = loc(\"hidden_states\")", "#out = loc(\"hidden_states\")", ErrorCodes.MlirUndefinedValue, "#in is not defined")]
    [DataRow("#in = loc(\"hidden_states\")", "#in = loc(#in)", ErrorCodes.MlirLimit, "refers to itself")]
    [DataRow("  }\n}\n#in", "  }\n}\n}\n#in", ErrorCodes.MlirSyntax, "end of the text")]
    public void RejectsWhatItDoesNotUnderstandWithACodeAndAPlace(string find, string replace, string code, string message)
    {
        string text = HandWritten.Replace("\r\n", "\n");
        Assert.IsTrue(text.Contains(find), find);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => MlirReader.Read(text.Replace(find, replace), "bad.mlir"));
        Assert.AreEqual(code, e.Code, e.Message);
        StringAssert.Contains(e.Message, message);
        StringAssert.Contains(e.Message, "bad.mlir line ");
        Assert.AreEqual("bad.mlir", e.File);
    }

    [TestMethod]
    public void DeepNestingIsALimitNotAStackOverflow()
    {
        string deep = new string('[', 100_000) + new string(']', 100_000);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => MlirReader.Read(HandWritten.Replace("false", deep), "deep.mlir"));
        Assert.AreEqual(ErrorCodes.MlirLimit, e.Code);
        e = Assert.ThrowsExactly<LlmBuildException>(() =>
            MlirReader.Read(HandWritten.Replace("loc(\"logits\")", "loc(" + string.Concat(Enumerable.Repeat("\"n\"(", 1000)) + "unknown" + new string(')', 1001)), "deep.mlir"));
        Assert.AreEqual(ErrorCodes.MlirLimit, e.Code);
    }

    /// <summary>
    /// Thousands of random edits of real modules (deleted, repeated and replaced spans, syntax characters, truncation):
    /// the reader either reads the text or throws a coded LLMB031x error, and never takes long.
    /// </summary>
    [TestMethod]
    public void MutatedModulesGiveOnlyCodedErrors()
    {
        var s = TestScenarios.All[1]; // w4bf16: quantized linears, constants, multi-result ops
        string[] seeds =
        [
            HandWritten,
            MlirWriter.Write(PieceGraphBuilder.Build(s.Model, s.Model.Piece("block_0")), "block_0_top_weights.npz"),
            MlirWriter.Write(PieceGraphBuilder.Build(s.Model, s.Model.Pieces.First(p => p.Kind == PieceKind.LmHead)), "lm_head_top_weights.npz"),
        ];
        const string alphabet = "{}[]()<>%#@:=,\"\\x0123456789-.e ftrunsil\n";
        string[] tokens = ["loc(", "fused[", "tensor<", "none", "%0", "#1", ":2", "\"top.Add\"", "-> (", "[[", "1e999", "\\FF", "\uD800", "é", "//", "true"];
        var rng = new Random(20261206);
        var codes = new Dictionary<string, int>();
        int accepted = 0;
        var total = Stopwatch.StartNew();
        long slowest = 0;
        for (int i = 0; i < 3000; i++)
        {
            string seed = seeds[i % seeds.Length];
            var text = new StringBuilder(seed);
            int edits = 1 + rng.Next(3);
            for (int k = 0; k < edits && text.Length > 0; k++)
            {
                int at = rng.Next(text.Length);
                int len = Math.Min(text.Length - at, 1 + rng.Next(rng.Next(2) == 0 ? 4 : 80));
                switch (rng.Next(6))
                {
                    case 0: text.Remove(at, len); break;
                    case 1: text.Insert(at, text.ToString(at, len)); break;
                    case 2: text[at] = alphabet[rng.Next(alphabet.Length)]; break;
                    case 3: text.Insert(at, tokens[rng.Next(tokens.Length)]); break;
                    case 4: text.Length = at; break;
                    default:
                    {
                        int other = rng.Next(text.Length);
                        (text[at], text[other]) = (text[other], text[at]);
                        break;
                    }
                }
            }
            string mutated = text.ToString();
            var one = Stopwatch.StartNew();
            try
            {
                MlirReader.Read(mutated, "fuzz.mlir");
                accepted++;
            }
            catch (LlmBuildException e)
            {
                Assert.IsTrue(string.CompareOrdinal(e.Code, "LLMB0310") >= 0 && string.CompareOrdinal(e.Code, "LLMB0319") <= 0,
                    $"mutation {i} gave {e.Code}: {e.Message}");
                StringAssert.Contains(e.Message, "fuzz.mlir line ");
                codes[e.Code] = codes.GetValueOrDefault(e.Code) + 1;
            }
            catch (Exception e)
            {
                Assert.Fail($"mutation {i} crashed the reader with {e.GetType().Name}: {e.Message}\n--- text ---\n{mutated}");
            }
            slowest = Math.Max(slowest, one.ElapsedMilliseconds);
        }
        Assert.IsTrue(slowest < 2000, $"one mutation took {slowest} ms");
        Assert.IsTrue(total.Elapsed < TimeSpan.FromSeconds(60), $"3000 mutations took {total.Elapsed}");
        Assert.IsTrue(codes.Count >= 5, "the mutations reach most error kinds: " + string.Join(", ", codes.Select(c => $"{c.Key}×{c.Value}")));
        Assert.IsTrue(accepted < 3000, "some mutations are rejected");
    }
}
