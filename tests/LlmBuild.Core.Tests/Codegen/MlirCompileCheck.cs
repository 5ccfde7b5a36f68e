using System.Collections.Concurrent;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using TP = LlmBuild.Core.Plan.TensorParallel;

namespace LlmBuild.Core.Tests.Codegen;

/// <summary>
/// Run on every piece <see cref="ExampleBuild"/> builds, so every option combination any test builds is covered:
/// the exported module round-trips (write → read → write gives the same text), and the bmodel compiled from the module
/// is byte-identical to one compiled straight from the graph builder's graph (what codegen compiled before it read
/// the MLIR; shards from <see cref="PieceGraphBuilder.BuildShard"/>).
/// </summary>
internal static class MlirCompileCheck
{
    /// <summary>The piece bmodels checked so far in this test run (for the test that asserts coverage).</summary>
    public static ConcurrentBag<string> Checked { get; } = [];

    public static void Check(ResolvedModel model, Piece piece, string mlirPath, string npzPath, string bmodelPath)
    {
        string text = File.ReadAllText(mlirPath);
        MlirPieceModule module = MlirReader.Read(text, mlirPath);
        string rewritten = MlirWriter.Write(module.Graph, module.WeightFile);
        if (rewritten != text)
            throw new AssertFailedException($"{piece.Name} ({Describe(model)}): the module does not round-trip; first difference at character " +
                $"{FirstDifference(text, rewritten)}.");
        byte[] expected = CompileFromBuilder(model, piece, npzPath);
        if (!expected.AsSpan().SequenceEqual(File.ReadAllBytes(bmodelPath)))
            throw new AssertFailedException($"{piece.Name} ({Describe(model)}): the bmodel compiled from the MLIR differs from the one compiled from the builder's graph.");
        Checked.Add(bmodelPath);
    }

    private static string Describe(ResolvedModel model) =>
        $"{model.Quantize} seq {model.SeqLength} {model.Options.Chip} NumDevice={model.Options.NumDevice} Batch={model.Options.Batch}";

    private static int FirstDifference(string a, string b)
    {
        int i = 0;
        while (i < a.Length && i < b.Length && a[i] == b[i]) i++;
        return i;
    }

    /// <summary>The bmodel bytes of a piece compiled from <see cref="PieceGraphBuilder"/>'s graph, without its module.</summary>
    public static byte[] CompileFromBuilder(ResolvedModel model, Piece piece, string npzPath)
    {
        ChipProfile chip = ChipProfile.Get(model.Options.Chip);
        using var npz = new NpzReader(npzPath);
        PieceTensorData Read(string key)
        {
            NpzEntry e = npz.GetEntry(key);
            return new PieceTensorData(e.Descr, e.Shape, npz.ReadBytes(key));
        }
        (BModelFile File, BModelBlobBuilder Blob) built;
        if (TP.IsSplit(model, piece))
        {
            var nets = new List<(GraphShard, CompiledPiece)>();
            for (int step = 0; step < TP.Steps; step++)
                for (int device = 0; device < TP.Devices(model); device++)
                {
                    PieceGraph shard = PieceGraphBuilder.BuildShard(model, piece, step, device);
                    nets.Add((shard.Shard!, PieceCodegen.Compile(model, shard, chip, Read)));
                }
            built = CompileStage.ToBModel(model, chip, PieceGraphBuilder.Build(model, piece), nets);
        }
        else built = CompileStage.ToBModel(model, chip, PieceCodegen.Compile(model, PieceGraphBuilder.Build(model, piece), chip, Read));
        return BModelWriter.ToBytes(built.File, built.Blob);
    }
}
