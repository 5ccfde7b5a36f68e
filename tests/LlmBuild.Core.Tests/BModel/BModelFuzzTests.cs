using System.Buffers.Binary;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.BModel;

/// <summary>
/// Mutates valid bmodels (bit flips, truncation, length and offset fields set to boundary values) thousands of times:
/// reading, inspecting and touching every binary must either succeed or raise a coded LlmBuildException.
/// </summary>
[TestClass]
public sealed class BModelFuzzTests
{
    private static readonly string[] AllowedCodes =
    [
        ErrorCodes.BModelBadHeader, ErrorCodes.BModelTruncated, ErrorCodes.BModelCorrupt,
        ErrorCodes.BModelBinaryOutOfRange, ErrorCodes.BModelCheckCodeMismatch,
    ];

    private static byte[] Combined()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"llmb-fuzz-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var inputs = new List<string>();
            foreach (var (name, seq, seed) in new[] { ("block_0", 16, 1), ("block_cache_0", 1, 1), ("block_0", 32, 1), ("lm_head", 1, 3) })
            {
                string path = Path.Combine(dir, $"{name}_{seq}.bmodel");
                var (m, b) = BModelSamples.Piece(name, seq, seed);
                BModelWriter.WriteFile(path, m, b);
                inputs.Add(path);
            }
            string output = Path.Combine(dir, "combined.bmodel");
            BModelCombiner.Combine(inputs, output);
            return File.ReadAllBytes(output);
        }
        finally { Directory.Delete(dir, true); }
    }

    private static byte[] Everything()
    {
        var (m, b) = BModelSamples.Everything();
        return BModelWriter.ToBytes(m, b);
    }

    [TestMethod]
    public void MutatedBModelsGiveOnlyCodedErrors()
    {
        var rng = new Random(20240601);
        int ok = 0, coded = 0;
        foreach (byte[] original in new[] { Combined(), Everything() })
        {
            int fbEnd = 64 + (int)BinaryPrimitives.ReadUInt32LittleEndian(original.AsSpan(8));
            for (int i = 0; i < 1500; i++)
            {
                byte[] data = Mutate(original, fbEnd, rng, i % 3);
                if (Exercise(data)) ok++; else coded++;
            }
        }
        Assert.IsTrue(coded > 1000, $"most mutations should be detected ({coded} coded errors, {ok} accepted)");
        Assert.IsTrue(ok > 0, "some mutations (e.g. in scalar fields) are harmless");
    }

    [TestMethod]
    public void EveryTruncationIsACodedError()
    {
        byte[] original = Everything();
        for (int len = 0; len < original.Length; len++)
        {
            var e = Assert.ThrowsExactly<LlmBuildException>(() => BModelReader.Read(original.AsMemory(0, len)).Dispose(), $"length {len}");
            CollectionAssert.Contains(AllowedCodes, e.Code);
        }
    }

    [TestMethod]
    public void CorruptFileOnDiskIsACodedError()
    {
        byte[] data = Everything();
        data[70] ^= 0xFF; // inside the root uoffset
        string path = Path.Combine(Path.GetTempPath(), $"llmb-fuzz-{Guid.NewGuid():N}.bmodel");
        try
        {
            File.WriteAllBytes(path, data);
            var e = Assert.ThrowsExactly<LlmBuildException>(() => BModelReader.Read(path).Dispose());
            Assert.AreEqual(ErrorCodes.BModelCorrupt, e.Code);
            Assert.AreEqual(path, e.File);
            File.WriteAllBytes(path, data[..10]);
            Assert.AreEqual(ErrorCodes.BModelBadHeader, Assert.ThrowsExactly<LlmBuildException>(() => BModelReader.Read(path).Dispose()).Code);
            File.WriteAllBytes(path, []);
            Assert.AreEqual(ErrorCodes.BModelBadHeader, Assert.ThrowsExactly<LlmBuildException>(() => BModelReader.Read(path).Dispose()).Code);
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void CorruptedWeightsFailTheCheckCode()
    {
        byte[] data = Everything();
        using var good = BModelReader.Read(data);
        var coeff = good.Model.Nets[0].Stages[0].CoeffMem!.BinaryCoeff!.Value;
        int fbEnd = 64 + (int)good.Header.FlatBufferSize;
        data[fbEnd + (int)coeff.Start + 10] ^= 1;
        using var bad = BModelReader.Read(data);
        Assert.AreEqual(ErrorCodes.BModelCheckCodeMismatch, Assert.ThrowsExactly<LlmBuildException>(bad.VerifyCheckCodes).Code);
    }

    /// <returns>true when the mutated file was accepted; false for a coded error. Anything else fails the test.</returns>
    private static bool Exercise(byte[] data)
    {
        try
        {
            using var c = BModelReader.Read(data);
            _ = BModelInspector.Text(c.Model);
            _ = BModelInspector.Json(c.Model);
            foreach (var (_, b) in BModelBinaries.All(c.Model))
                if (b.Size <= int.MaxValue) _ = c.GetSpan(b).Length;
            c.VerifyCheckCodes();
            return true;
        }
        catch (LlmBuildException e) when (AllowedCodes.Contains(e.Code))
        {
            return false;
        }
    }

    private static readonly uint[] Boundary = [0, 1, 3, 4, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC];

    private static byte[] Mutate(byte[] original, int fbEnd, Random rng, int strategy)
    {
        byte[] data = (byte[])original.Clone();
        switch (strategy)
        {
            case 0: // bit flips, mostly in header and flatbuffer where structure lives
                int flips = 1 + rng.Next(8);
                for (int k = 0; k < flips; k++)
                {
                    int at = rng.Next(10) == 0 ? rng.Next(data.Length) : rng.Next(fbEnd);
                    data[at] ^= (byte)(1 << rng.Next(8));
                }
                return data;
            case 1: // truncation, or header size fields changed
                if (rng.Next(2) == 0) return data[..rng.Next(data.Length)];
                int field = 4 * (1 + rng.Next(3));
                uint value = rng.Next(2) == 0 ? Boundary[rng.Next(Boundary.Length)] : BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(field)) + (uint)rng.Next(-16, 17);
                BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(field), value);
                return data;
            default: // an aligned 32-bit word of the flatbuffer (offsets, lengths, vtable entries) set to a boundary or nearby value
                int word = 64 + 4 * rng.Next((fbEnd - 64) / 4);
                uint old = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(word));
                uint v = rng.Next(3) switch
                {
                    0 => Boundary[rng.Next(Boundary.Length)],
                    1 => old + (uint)rng.Next(-64, 65),
                    _ => (uint)rng.Next(fbEnd),
                };
                BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(word), v);
                if (rng.Next(4) == 0) // and sometimes a 16-bit vtable entry too
                {
                    int half = 64 + 2 * rng.Next((fbEnd - 64) / 2);
                    BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(half), (ushort)Boundary[rng.Next(Boundary.Length)]);
                }
                return data;
        }
    }
}
