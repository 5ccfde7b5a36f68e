using System.Buffers.Binary;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>
/// Issue 19, cause 9: a damaged bmodel is a coded error when it is loaded — shape fields set to −5, 2^40 or 0x7FFFFFFF
/// (LLMB0410), and weights that no longer match their sha256 check codes (LLMB0408), for run/logits (the emulator) and
/// inspect alike.
/// </summary>
[TestClass]
public sealed class DamagedBModelTests
{
    /// <summary>A copy of the small model's bmodel, changed by <paramref name="damage"/> (file bytes, flatbuffer start).</summary>
    internal static string DamagedCopy(Action<byte[], BModelContainer> damage)
    {
        string source = SmallBuiltModel.Get().BModel;
        byte[] bytes = File.ReadAllBytes(source);
        using (var c = BModelReader.Read(bytes)) damage(bytes, c);
        string path = Path.Combine(Path.GetTempPath(), $"damaged-{Guid.NewGuid():N}.bmodel");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Offset in the file of the first u64 vector [d0, d1, …] equal to <paramref name="dims"/> (a tensor's shape).</summary>
    private static int FindDims(byte[] bytes, long[] dims)
    {
        int fbEnd = 64 + (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8));
        for (int at = 64; at + 8 * dims.Length <= fbEnd; at += 4)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at - 4)) != dims.Length) continue; // the vector's length prefix
            bool match = true;
            for (int i = 0; i < dims.Length && match; i++) match = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(at + 8 * i)) == dims[i];
            if (match) return at;
        }
        throw new InvalidOperationException($"shape [{string.Join(",", dims)}] not found");
    }

    [TestMethod]
    [DataRow(-5L)]
    [DataRow(1L << 40)]
    [DataRow(0x7FFFFFFFL)]
    [DataRow(0L)]
    public void ShapeFieldOutsideTheContractIsACodedErrorAtLoad(long value)
    {
        var small = SmallBuiltModel.Get();
        using var emu = LlmEmulator.Load(small.BModel);
        long[] history = [emu.Batch, emu.SeqLength, emu.KvHeads, emu.HeadDim];
        string path = DamagedCopy((bytes, _) => BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(FindDims(bytes, history) + 8), value));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => LlmEmulator.Load(path, small.ConfigDir).Dispose());
        Assert.AreEqual(ErrorCodes.BModelBadTensor, e.Code, e.Message);
        Assert.AreEqual(path, e.File);
        StringAssert.Contains(e.Message, "shape");
    }

    [TestMethod]
    public void FiftyFlippedWeightBytesAreDetectedAtLoadAndByInspect()
    {
        var small = SmallBuiltModel.Get();
        string path = DamagedCopy((bytes, c) =>
        {
            int blobStart = 64 + (int)c.Header.FlatBufferSize;
            BinaryRef coeff = c.Model.Nets.First(n => n.Name == "block_1").Stages[0].CoeffMem!.BinaryCoeff!.Value;
            var rng = new Random(50);
            for (int i = 0; i < 50; i++) bytes[blobStart + (int)coeff.Start + rng.Next((int)coeff.Size)] ^= (byte)(1 + rng.Next(255));
        });
        Assert.AreEqual(ErrorCodes.BModelCheckCodeMismatch, Assert.ThrowsExactly<LlmBuildException>(() => LlmEmulator.Load(path, small.ConfigDir).Dispose()).Code);
        Assert.AreEqual(ErrorCodes.BModelCheckCodeMismatch, Assert.ThrowsExactly<LlmBuildException>(() => BModelInspector.Text(path)).Code);
        Assert.AreEqual(ErrorCodes.BModelCheckCodeMismatch, Assert.ThrowsExactly<LlmBuildException>(() => BModelInspector.Json(path)).Code);
        // Opting out (--no-verify-weights) loads it: the caller said the file is intact.
        using var unchecked_ = LlmEmulator.Load(path, small.ConfigDir, verifyWeights: false);
        Assert.IsFalse(string.IsNullOrEmpty(BModelInspector.Text(path, verifyWeights: false)));
    }

    [TestMethod]
    public void AnIntactModelLoadsWithVerification()
    {
        var small = SmallBuiltModel.Get();
        using var emu = LlmEmulator.Load(small.BModel, small.ConfigDir);
        Assert.AreEqual(16, emu.SeqLength);
    }
}
