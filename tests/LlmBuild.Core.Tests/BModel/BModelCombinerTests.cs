using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.BModel;

[TestClass]
public sealed class BModelCombinerTests
{
    private string _dir = "";

    [TestInitialize]
    public void Init() => Directory.CreateDirectory(_dir = Path.Combine(Path.GetTempPath(), $"llmb-combine-{Guid.NewGuid():N}"));

    [TestCleanup]
    public void Cleanup() => Directory.Delete(_dir, true);

    private string Write(string file, (BModelFile Model, BModelBlobBuilder Blob) piece)
    {
        string path = Path.Combine(_dir, file);
        BModelWriter.WriteFile(path, piece.Model, piece.Blob);
        return path;
    }

    private string[] LlmPieces() =>
    [
        Write("block_0.bmodel", BModelSamples.Piece("block_0", 16, weightSeed: 1)),
        Write("block_cache_0.bmodel", BModelSamples.Piece("block_cache_0", 1, weightSeed: 1, addrMode: 1)),
        Write("block_1.bmodel", BModelSamples.Piece("block_1", 16, weightSeed: 2)),
        Write("block_cache_1.bmodel", BModelSamples.Piece("block_cache_1", 1, weightSeed: 2, addrMode: 1)),
        Write("lm_head.bmodel", BModelSamples.Piece("lm_head", 1, weightSeed: 3)),
    ];

    [TestMethod]
    public void CombinedModelKeepsNetsInOrderAndSharesBlockWeights()
    {
        string[] inputs = LlmPieces();
        string output = Path.Combine(_dir, "out", "model.bmodel");
        var result = BModelCombiner.Combine(inputs, output, createTime: "build-42");

        using var combined = BModelReader.Read(output);
        var m = combined.Model;
        CollectionAssert.AreEqual(new[] { "block_0", "block_cache_0", "block_1", "block_cache_1", "lm_head" }, m.Nets.Select(n => n.Name).ToArray());
        Assert.AreEqual("build-42", m.Time);
        Assert.AreEqual("BM1684X", m.Chip);
        Assert.AreEqual(1, m.Nets[1].AddrMode);
        Assert.AreEqual((ulong)(4096 * 16), m.NeuronSize);

        var coeff0 = m.Nets[0].Stages[0].CoeffMem!.BinaryCoeff!.Value;
        Assert.AreEqual(coeff0, m.Nets[1].Stages[0].CoeffMem!.BinaryCoeff!.Value, "block_0 and block_cache_0 share one weight blob");
        Assert.AreNotEqual(coeff0, m.Nets[2].Stages[0].CoeffMem!.BinaryCoeff!.Value);
        combined.VerifyCheckCodes();

        // Every binary of every input reads back byte for byte from the combined file.
        for (int i = 0; i < inputs.Length; i++)
        {
            using var piece = BModelReader.Read(inputs[i]);
            var pieceBinaries = BModelBinaries.All(piece.Model).ToArray();
            var netBinaries = BModelBinaries.All(m with { Nets = [m.Nets[i]], KernelModule = m.KernelModule }).ToArray();
            Assert.AreEqual(pieceBinaries.Length, netBinaries.Length);
            for (int k = 0; k < pieceBinaries.Length; k++)
                CollectionAssert.AreEqual(piece.ReadBinary(pieceBinaries[k].Binary), combined.ReadBinary(netBinaries[k].Binary), pieceBinaries[k].Where);
        }

        // 5 pieces x (coeff + bdc + gdma + kernel): coeff shared in pairs, cmd streams shared by equal seq lengths, kernel by all.
        Assert.AreEqual(3 + 2 + 2 + 1, result.UniqueBinaries);
        Assert.AreEqual(2 * 1000ul + 300ul * 4 + (96 + 1 + 128 + 1) * 2ul + (96 + 16 + 128 + 16), result.DedupedBytes);
        Assert.AreEqual(new FileInfo(output).Length, result.OutputBytes);
        Assert.AreEqual(5, result.Nets);
    }

    [TestMethod]
    public void NetSeenTwiceBecomesTwoStages()
    {
        string a = Write("a.bmodel", BModelSamples.Piece("block_0", 16, weightSeed: 1));
        string b = Write("b.bmodel", BModelSamples.Piece("block_0", 32, weightSeed: 1));
        string output = Path.Combine(_dir, "two-stage.bmodel");
        var result = BModelCombiner.Combine([a, b], output);
        using var c = BModelReader.Read(output);
        Assert.AreEqual(1, c.Model.Nets.Count);
        Assert.AreEqual(2, result.Stages);
        CollectionAssert.AreEqual(new long[] { 1, 16, 64 }, c.Model.Nets[0].Stages[0].InputTensors[0].Shape.ToArray());
        CollectionAssert.AreEqual(new long[] { 1, 32, 64 }, c.Model.Nets[0].Stages[1].InputTensors[0].Shape.ToArray());
        Assert.AreEqual(c.Model.Nets[0].Stages[0].CoeffMem!.BinaryCoeff, c.Model.Nets[0].Stages[1].CoeffMem!.BinaryCoeff);
        StringAssert.Contains(BModelInspector.Text(output), "stage 1:");
    }

    [TestMethod]
    public void SameNetWithIdenticalShapesIsAConflict()
    {
        string a = Write("a.bmodel", BModelSamples.Piece("block_0", 16, weightSeed: 1));
        string b = Write("b.bmodel", BModelSamples.Piece("block_0", 16, weightSeed: 2));
        AssertConflict([a, b], "identical");
    }

    [TestMethod]
    public void SameNetWithDifferentInputNamesIsAConflict()
    {
        var (model, blob) = BModelSamples.Piece("block_0", 32, weightSeed: 1);
        var stage = model.Nets[0].Stages[0];
        var renamed = stage with { InputTensors = [stage.InputTensors[0] with { Name = "hidden" }, .. stage.InputTensors.Skip(1)] };
        string a = Write("a.bmodel", BModelSamples.Piece("block_0", 16, weightSeed: 1));
        string b = Write("b.bmodel", (model with { Nets = [model.Nets[0] with { Stages = [renamed] }] }, blob));
        AssertConflict([a, b], "'input_states' vs 'hidden'");
    }

    [TestMethod]
    public void SameNetWithDifferentOutputTypeIsAConflict()
    {
        var (model, blob) = BModelSamples.Piece("block_0", 32, weightSeed: 1);
        var stage = model.Nets[0].Stages[0];
        var changed = stage with { OutputTensors = [stage.OutputTensors[0] with { DataType = BModelDataType.Float16 }, stage.OutputTensors[1]] };
        string a = Write("a.bmodel", BModelSamples.Piece("block_0", 16, weightSeed: 1));
        string b = Write("b.bmodel", (model with { Nets = [model.Nets[0] with { Stages = [changed] }] }, blob));
        AssertConflict([a, b], "bfloat16 vs float16");
    }

    [TestMethod]
    public void DifferentChipsAreAConflict()
    {
        string a = Write("a.bmodel", BModelSamples.Piece("block_0", 16, weightSeed: 1));
        string b = Write("b.bmodel", BModelSamples.Piece("block_1", 16, weightSeed: 1, chip: "BM1688"));
        AssertConflict([a, b], "BM1688");
    }

    [TestMethod]
    public void CombineIsDeterministic()
    {
        string[] inputs = LlmPieces();
        string o1 = Path.Combine(_dir, "o1.bmodel"), o2 = Path.Combine(_dir, "o2.bmodel");
        BModelCombiner.Combine(inputs, o1);
        BModelCombiner.Combine(inputs, o2);
        CollectionAssert.AreEqual(File.ReadAllBytes(o1), File.ReadAllBytes(o2));
    }

    [TestMethod]
    public void MissingInputIsACodedError()
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => BModelCombiner.Combine([Path.Combine(_dir, "nope.bmodel")], Path.Combine(_dir, "o.bmodel")));
        Assert.AreEqual(ErrorCodes.ReadFailed, e.Code);
        Assert.IsFalse(File.Exists(Path.Combine(_dir, "o.bmodel")));
    }

    private void AssertConflict(string[] inputs, string messagePart)
    {
        string output = Path.Combine(_dir, "conflict.bmodel");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => BModelCombiner.Combine(inputs, output));
        Assert.AreEqual(ErrorCodes.BModelCombineConflict, e.Code);
        StringAssert.Contains(e.Message, messagePart);
        Assert.IsFalse(File.Exists(output), "nothing half-written");
    }
}
