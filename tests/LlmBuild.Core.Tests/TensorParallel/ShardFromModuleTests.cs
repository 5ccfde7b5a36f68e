using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Tests.Graph;
using TP = LlmBuild.Core.Plan.TensorParallel;

namespace LlmBuild.Core.Tests.TensorParallel;

/// <summary>
/// Codegen splits a block read from its module (<see cref="TensorParallelShards"/>); for every scenario that splits
/// (families, biases, q/k norms, quantization, per-channel groups, Dynamic, decode and history blocks) the sub-nets
/// are the graph builder's own shards, tensor for tensor.
/// </summary>
[TestClass]
public sealed class ShardFromModuleTests
{
    [TestMethod]
    public void ShardsOfTheReadModuleAreTheBuildersShards()
    {
        int compared = 0;
        var features = new HashSet<string>();
        foreach (var s in TestScenarios.All)
            foreach (int devices in new[] { 2, 4 })
            {
                var model = s.Model with { Options = s.Model.Options with { NumDevice = devices } };
                try { TP.Check(model); }
                catch (LlmBuildException) { continue; }
                var roles = model.Owners.SelectMany(o => o.Entries).ToList();
                if (roles.Any(e => e.Role == WeightRole.QNorm)) features.Add("q/k norm");
                if (roles.Any(e => e.Role == WeightRole.QBias)) features.Add("qkv bias");
                if (roles.Any(e => e.Storage == WeightStorage.Quantized)) features.Add(model.Weights.GroupSize == 0 ? "per-channel" : "grouped");
                if (model.Options.Dynamic) features.Add("dynamic");
                foreach (Piece piece in TestScenarios.Pieces(s).Where(p => TP.IsBlock(p.Kind)))
                {
                    PieceGraph whole = MlirReader.Read(MlirWriter.Write(PieceGraphBuilder.Build(model, piece), "w.npz"), "w.mlir").Graph;
                    for (int step = 0; step < TP.Steps; step++)
                        for (int device = 0; device < devices; device++)
                        {
                            string where = $"{s.Name} {piece.Name} D={devices} step {step} device {device}";
                            AssertSame(PieceGraphBuilder.BuildShard(model, piece, step, device), TensorParallelShards.Shard(whole, step, device, devices), where);
                            compared++;
                        }
                }
            }
        Assert.IsTrue(compared > 50, $"only {compared} shards compared");
        CollectionAssert.IsSubsetOf(new[] { "q/k norm", "qkv bias", "grouped" }, features.ToArray(), string.Join(", ", features));
    }

    private static void AssertSame(PieceGraph expected, PieceGraph actual, string where)
    {
        Assert.AreEqual(expected.Name, actual.Name, where);
        Assert.AreEqual(expected.Shard, actual.Shard, where);
        CollectionAssert.AreEqual(expected.Inputs.ToArray(), actual.Inputs.ToArray(), where);
        CollectionAssert.AreEqual(expected.Outputs.ToArray(), actual.Outputs.ToArray(), where);
        CollectionAssert.AreEqual(expected.Ops.Select(Describe).ToArray(), actual.Ops.Select(Describe).ToArray(), where);
        // Weights and constants may be declared in another order (codegen packs them by key); the sets are the same.
        CollectionAssert.AreEqual(Sorted(expected.TensorList.Select(t => t.ToString())), Sorted(actual.TensorList.Select(t => t.ToString())), where);
        CollectionAssert.AreEqual(Sorted(expected.Weights.Select(Describe)), Sorted(actual.Weights.Select(Describe)), where);
        CollectionAssert.AreEqual(Sorted(expected.Constants.Select(c => c.Key)), Sorted(actual.Constants.Select(c => c.Key)), where);
    }

    private static string[] Sorted(IEnumerable<string> items) => items.Order(StringComparer.Ordinal).ToArray();

    private static string Describe(GraphOp op) =>
        $"{op.Kind}({string.Join(",", op.Inputs)}) -> {string.Join(",", op.Outputs)} {{{string.Join(", ", op.Attributes)}}}";

    private static string Describe(GraphWeight w) =>
        $"{w.Key} {w.DType} [{string.Join(",", w.Shape)}] {(w.Slice is { } s ? $"axis {s.Axis} +{s.Start} x{s.Length} of [{string.Join(",", s.SourceShape)}]" : "whole")}";
}
