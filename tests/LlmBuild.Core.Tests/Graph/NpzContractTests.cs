using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>The graphs against the npz files the weights stage writes: keys, dtypes, shapes and values agree.</summary>
[TestClass]
public sealed class NpzContractTests
{
    private static (string Dir, string[] OwnerFiles) WriteOwners(ResolvedModel model)
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-npz-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        var files = model.Owners.Select(o =>
        {
            string path = Path.Combine(dir, o.FileName);
            WeightOwnerWriter.Write(ReferenceModelTests.TinyCheckpoint, model, o, path);
            return path;
        }).ToArray();
        return (dir, files);
    }

    [TestMethod]
    [DataRow("bf16", 64)]
    [DataRow("w4bf16", 32)]
    [DataRow("w8f16", 0)]
    public void EveryPieceFindsItsWeightsInTheOwnerNpzAndRunsFromIt(string quantize, int group)
    {
        string tiny = TestResolver.TinyModelDir;
        var model = TestResolver.Resolve(tiny, TestResolver.Options(tiny) with
            { Quantize = quantize, QGroupSize = group, DoSample = true, LoraMaxRank = 2, MaxInputLength = 16 });
        var (dir, owners) = WriteOwners(model);
        try
        {
            using var npz = new NpzWeightSource(owners);
            foreach (Piece piece in model.Pieces)
            {
                PieceGraph graph = PieceGraphBuilder.Build(model, piece);
                npz.Verify(graph);

                // The piece's own constants survive an npz round trip in their dtype.
                string constPath = Path.Combine(dir, piece.Name + "_constants.npz");
                using (var stream = File.Create(constPath))
                using (var writer = new NpzWriter(stream))
                {
                    GraphNpz.AddConstants(writer, graph);
                    writer.Finish();
                }
                using var reader = new NpzReader(constPath);
                foreach (GraphConstant c in graph.Constants)
                {
                    Assert.AreEqual(GraphNpz.Descr(c.DType), reader.GetEntry(c.Key).Descr, c.Key);
                    CollectionAssert.AreEqual(c.Shape, reader.GetEntry(c.Key).Header.Shape, c.Key);
                    CollectionAssert.AreEqual(c.Data, reader.ReadFloat32(c.Key), c.Key);
                }
            }

            // Run from the npz files and from the checkpoint: the same numbers.
            var fromNpz = new PieceChain(model, npz);
            var fromCheckpoint = new PieceChain(model, new TestWeightSource(model, ReferenceModelTests.TinyCheckpoint));
            float[] a = fromNpz.Prefill(Goldens.PromptIds), b = fromCheckpoint.Prefill(Goldens.PromptIds);
            for (int step = 0; step < 3; step++)
            {
                CollectionAssert.AreEqual(b, a, $"step {step}");
                int token = ReferenceModelTests.ArgMax(a);
                a = fromNpz.Decode(token);
                b = fromCheckpoint.Decode(token);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void VerifyRejectsAWeightOfTheWrongShape()
    {
        string tiny = TestResolver.TinyModelDir;
        var model = TestResolver.Resolve(tiny, TestResolver.Options(tiny) with { Quantize = "w4bf16", QGroupSize = 32 });
        var (dir, owners) = WriteOwners(model);
        try
        {
            // The same weights quantized with another group size no longer fit the graph's scales shape.
            var other = model with { Weights = model.Weights with { GroupSize = 64 } };
            using var npz = new NpzWeightSource(owners);
            var e = Assert.ThrowsExactly<LlmBuild.Core.Diagnostics.LlmBuildException>(() => npz.Verify(PieceGraphBuilder.Build(other, other.Piece("block_0"))));
            Assert.AreEqual(LlmBuild.Core.Diagnostics.ErrorCodes.GraphBadShape, e.Code);
            StringAssert.Contains(e.Message, ".scales");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
