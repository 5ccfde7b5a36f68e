using System.Buffers.Binary;
using System.Security.Cryptography;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.BModel;

[TestClass]
public sealed class BModelRoundTripTests
{
    [TestMethod]
    public void PieceRoundTripsFieldForField()
    {
        var (model, blob) = BModelSamples.Piece("block_0", 16, 1);
        byte[] bytes = BModelWriter.ToBytes(model, blob);
        using var container = BModelReader.Read(bytes);
        Assert.AreEqual(BModelSamples.Dump(model), BModelSamples.Dump(container.Model));
    }

    [TestMethod]
    public void EveryTableAndFieldRoundTrips()
    {
        var (model, blob) = BModelSamples.Everything();
        byte[] bytes = BModelWriter.ToBytes(model, blob);
        using var container = BModelReader.Read(bytes);
        Assert.AreEqual(BModelSamples.Dump(model), BModelSamples.Dump(container.Model));
    }

    [TestMethod]
    public void ModelAloneReadsFromASpan()
    {
        var (model, blob) = BModelSamples.Everything();
        byte[] bytes = BModelWriter.ToBytes(model, blob);
        Assert.AreEqual(BModelSamples.Dump(model), BModelSamples.Dump(BModelReader.ReadModel(bytes)));
    }

    [TestMethod]
    public void HeaderHasMagicAndSizesOfTheParts()
    {
        var (model, blob) = BModelSamples.Piece("block_0", 16, 1);
        byte[] bytes = BModelWriter.ToBytes(model, blob);
        Assert.AreEqual(0xFF55AAEEu, BinaryPrimitives.ReadUInt32LittleEndian(bytes));
        Assert.AreEqual(64u, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4)));
        uint fbSize = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8));
        uint binSize = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(12));
        Assert.AreEqual((long)bytes.Length, 64 + fbSize + binSize);
        Assert.IsTrue(bytes.AsSpan(16, 48).IndexOfAnyExcept((byte)0) < 0, "reserved header words are zero");
        Assert.AreEqual(blob.Length, (ulong)binSize);
    }

    [TestMethod]
    public void BinariesReadBackFromFileAndMemoryWithMatchingCheckCode()
    {
        var (model, blob) = BModelSamples.Piece("block_0", 16, 1);
        string path = Path.Combine(Path.GetTempPath(), $"llmb-rt-{Guid.NewGuid():N}.bmodel");
        try
        {
            BModelWriter.WriteFile(path, model, blob);
            using var file = BModelReader.Read(path);
            var coeff = file.Model.Nets[0].Stages[0].CoeffMem!;
            CollectionAssert.AreEqual(BModelSamples.Bytes(1000, 1), file.ReadBinary(coeff.BinaryCoeff!.Value));
            CollectionAssert.AreEqual(SHA256.HashData(BModelSamples.Bytes(1000, 1)), coeff.CheckCode.ToArray());
            CollectionAssert.AreEqual(BModelSamples.Bytes(300, 99), file.GetMemory(file.Model.KernelModule!.Binary).ToArray());
            file.VerifyCheckCodes();
            Assert.AreEqual(0ul, coeff.BinaryCoeff!.Value.Start % 64);
            Assert.AreEqual(0ul, file.Model.Nets[0].Stages[0].CmdGroups[0].BinaryBdc!.Value.Start % 64, "payloads are 64-byte aligned in the blob");
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void SameInputGivesIdenticalBytes()
    {
        var (m1, b1) = BModelSamples.Everything();
        var (m2, b2) = BModelSamples.Everything();
        CollectionAssert.AreEqual(BModelWriter.ToBytes(m1, b1), BModelWriter.ToBytes(m2, b2));
    }

    [TestMethod]
    public void IdenticalPayloadsAreStoredOnce()
    {
        var blob = new BModelBlobBuilder();
        var a = blob.Add(BModelSamples.Bytes(100, 1));
        var b = blob.Add(BModelSamples.Bytes(100, 2));
        var c = blob.Add(BModelSamples.Bytes(100, 1));
        Assert.AreEqual(a, c);
        Assert.AreNotEqual(a, b);
        Assert.AreEqual(2, blob.UniqueCount);
        Assert.AreEqual(1, blob.DedupedCount);
        Assert.AreEqual(228ul, blob.Length, "second payload starts at 128, no padding after the last");
    }

    [TestMethod]
    public void EmptyCheckCodeIsComputedFromTheBlob()
    {
        var (model, blob) = BModelSamples.Piece("block_0", 16, 1);
        var stage = model.Nets[0].Stages[0];
        model = model with { Nets = [model.Nets[0] with { Stages = [stage with { CoeffMem = stage.CoeffMem! with { CheckCode = [] } }] }] };
        using var c = BModelReader.Read(BModelWriter.ToBytes(model, blob));
        CollectionAssert.AreEqual(SHA256.HashData(BModelSamples.Bytes(1000, 1)), c.Model.Nets[0].Stages[0].CoeffMem!.CheckCode.ToArray());
    }

    [TestMethod]
    public void WriterRejectsBinaryOutsideTheBlob()
    {
        var (model, blob) = BModelSamples.Piece("block_0", 16, 1);
        model = model with { KernelModule = new KernelModule("k.so", new BinaryRef(blob.Length, 10)) };
        var e = Assert.ThrowsExactly<LlmBuildException>(() => BModelWriter.ToBytes(model, blob));
        Assert.AreEqual(ErrorCodes.BModelInvalid, e.Code);
    }

    [TestMethod]
    public void WriterRejectsModelWithoutNets()
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => BModelWriter.ToBytes(new BModelFile { Chip = "BM1684X" }, new BModelBlobBuilder()));
        Assert.AreEqual(ErrorCodes.BModelInvalid, e.Code);
    }
}
