using System.Diagnostics;
using LlmBuild.Core.FlatBuffers;
using LlmBuild.Tests;

namespace LlmBuild.Core.Tests.FlatBuffers;

[TestClass]
public sealed class FlatBufferTests
{
    /// <summary>table T { a:uint32 (id:0); b:uint64 (id:1); s:string (id:2); }, T{a=7, s="ab"}, laid out by hand:</summary>
    private static readonly string GoldenHex = string.Concat(
        "10000000",          //  0: root uoffset -> table at 16
        "0000",              //  4: padding so the buffer size is a multiple of 4
        "0A00", "0C00",      //  6: vtable: 10 bytes long, table 12 bytes long
        "0800", "0000", "0400", // 10: a at +8, b absent, s at +4
        "0A000000",          // 16: table: soffset 10 -> vtable at 6
        "08000000",          // 20: s: uoffset -> string at 28
        "07000000",          // 24: a = 7
        "02000000", "61620000"); // 28: string length 2, "ab", terminator, padding

    private static byte[] BuildGolden()
    {
        var b = new FlatBufferBuilder();
        int s = b.CreateString("ab");
        b.StartTable(3);
        b.AddFieldUInt32(0, 7, 0);
        b.AddFieldUInt64(1, 0, 0); // default: elided
        b.AddFieldOffset(2, s);
        return b.Finish(b.EndTable());
    }

    [TestMethod]
    public void SmallTableMatchesHandCheckedBytes() => Assert.AreEqual(GoldenHex, Convert.ToHexString(BuildGolden()));

    [TestMethod]
    public void SmallTableReadsBack()
    {
        var t = new FlatBufferReader(BuildGolden()).Root();
        Assert.AreEqual(7u, t.GetUInt32(0));
        Assert.IsFalse(t.Has(1));
        Assert.AreEqual(42ul, t.GetUInt64(1, 42), "absent field gives the default");
        Assert.AreEqual("ab", t.GetString(2, "s"));
        Assert.IsNull(t.GetString(5, "beyond the vtable"));
    }

    [TestMethod]
    public void FlatcDecodesTheGoldenBuffer()
    {
        string flatc = ExternalDecoders.Flatc();
        string dir = Path.Combine(Path.GetTempPath(), $"llmb-fb-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "t.fbs"), "table T { a:uint32 (id: 0); b:uint64 (id: 1); s:string (id: 2); }\nroot_type T;\n");
            File.WriteAllBytes(Path.Combine(dir, "t.bin"), BuildGolden());
            var psi = new ProcessStartInfo(flatc, ["--json", "--raw-binary", "--strict-json", "--defaults-json", "-o", dir, "t.fbs", "--", "t.bin"])
            { WorkingDirectory = dir, RedirectStandardError = true, RedirectStandardOutput = true };
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd() + p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.AreEqual(0, p.ExitCode, err);
            string json = string.Concat(File.ReadAllText(Path.Combine(dir, "t.json")).Where(c => !char.IsWhiteSpace(c)));
            Assert.AreEqual("{\"a\":7,\"b\":0,\"s\":\"ab\"}", json);
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void IdenticalVtablesAreShared()
    {
        var b = new FlatBufferBuilder();
        b.StartTable(2); b.AddFieldUInt32(0, 5, 0); b.EndTable(); // leaves the head 2 bytes off alignment, as for t1 and t2
        b.StartTable(2); b.AddFieldUInt32(0, 1, 0); int t1 = b.EndTable();
        int sizeAfterFirst = b.Offset;
        b.StartTable(2); b.AddFieldUInt32(0, 2, 0); int t2 = b.EndTable();
        Assert.AreEqual(10, b.Offset - sizeAfterFirst, "the second table is 2 bytes of alignment + soffset + value, no vtable");
        int v = b.CreateOffsetVector([t1, t2]);
        b.StartTable(1); b.AddFieldOffset(0, v);
        var root = new FlatBufferReader(b.Finish(b.EndTable())).Root();
        var vec = root.GetVector(0, 4, "v")!.Value;
        Assert.AreEqual(1u, vec.Table(0).GetUInt32(0));
        Assert.AreEqual(2u, vec.Table(1).GetUInt32(0));
    }

    [TestMethod]
    public void VectorsOfScalarsStructsAndStringsRoundTrip()
    {
        var b = new FlatBufferBuilder(16); // small start: exercises growth
        int u64 = b.CreateVector([1ul, ulong.MaxValue, 3ul]);
        int i32 = b.CreateVector([-1, 0, int.MaxValue]);
        int u8 = b.CreateVector(new byte[] { 9, 8, 7, 6, 5 }.AsSpan());
        int structs = b.CreateStructVector([(1ul, 2ul), (3ul, 4ul)]);
        int strings = b.CreateOffsetVector([b.CreateString("x"), b.CreateString("héllo")]);
        b.StartTable(7);
        b.AddFieldOffset(0, u64);
        b.AddFieldOffset(1, i32);
        b.AddFieldOffset(2, u8);
        b.AddFieldOffset(3, structs);
        b.AddFieldOffset(4, strings);
        b.AddFieldStruct(5, 10, 20);
        b.AddFieldFloat(6, 1f, 1f); // default: elided
        var t = new FlatBufferReader(b.Finish(b.EndTable())).Root();
        var v = t.GetVector(0, 8, "u64")!.Value;
        CollectionAssert.AreEqual(new[] { 1ul, ulong.MaxValue, 3ul }, Enumerable.Range(0, v.Count).Select(v.UInt64).ToArray());
        var w = t.GetVector(1, 4, "i32")!.Value;
        CollectionAssert.AreEqual(new[] { -1, 0, int.MaxValue }, Enumerable.Range(0, w.Count).Select(w.Int32).ToArray());
        CollectionAssert.AreEqual(new byte[] { 9, 8, 7, 6, 5 }, t.GetVector(2, 1, "u8")!.Value.Bytes().ToArray());
        var s = t.GetVector(3, 16, "structs")!.Value;
        Assert.AreEqual((3ul, 4ul), s.Struct2xU64(1));
        var str = t.GetVector(4, 4, "strings")!.Value;
        Assert.AreEqual("héllo", str.String(1));
        Assert.AreEqual((10ul, 20ul), t.GetStruct2xU64(5));
        Assert.IsFalse(t.Has(6));
        Assert.AreEqual(1f, t.GetFloat(6, 1f));
    }

    [TestMethod]
    public void EightByteFieldsAreAlignedInTheBuffer()
    {
        var b = new FlatBufferBuilder();
        b.StartTable(2);
        b.AddFieldUInt32(1, 5, 0);
        b.AddFieldUInt64(0, 0x1122334455667788, 0);
        byte[] buf = b.Finish(b.EndTable());
        int at = buf.AsSpan().IndexOf(new byte[] { 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11 });
        Assert.AreEqual(0, at % 8);
        Assert.AreEqual(0, buf.Length % 8);
    }

    [TestMethod]
    public void TruncatedOrBadBuffersRaiseFormatErrors()
    {
        byte[] good = BuildGolden();
        for (int len = 0; len < good.Length - 1; len++) // the last byte is padding after the terminator
        {
            byte[] cut = good[..len];
            Assert.ThrowsExactly<FlatBufferFormatException>(() =>
            {
                var t = new FlatBufferReader(cut).Root();
                _ = t.GetUInt32(0);
                _ = t.GetString(2, "s");
            }, $"length {len}");
        }
        byte[] badString = (byte[])good.Clone();
        badString[28] = 0xFF; // string length beyond the buffer
        Assert.ThrowsExactly<FlatBufferFormatException>(() => new FlatBufferReader(badString).Root().GetString(2, "s"));
        byte[] noTerminator = (byte[])good.Clone();
        noTerminator[34] = (byte)'c';
        Assert.ThrowsExactly<FlatBufferFormatException>(() => new FlatBufferReader(noTerminator).Root().GetString(2, "s"));
        byte[] badField = (byte[])good.Clone();
        badField[10] = 0x20; // field a at +32, outside the 12-byte table
        Assert.ThrowsExactly<FlatBufferFormatException>(() => new FlatBufferReader(badField).Root().GetUInt32(0));
    }

    [TestMethod]
    public void SharedOffsetsCannotExplodeTheObjectGraph()
    {
        // A vector whose 1000 entries all point at the same table: legal wire format, but decoding every entry
        // as a separate object would let a small file claim a huge graph; the reader's budget stops it.
        var b = new FlatBufferBuilder();
        b.StartTable(1); b.AddFieldUInt32(0, 1, 0); int t = b.EndTable();
        int v = b.CreateOffsetVector(Enumerable.Repeat(t, 1000).ToArray());
        b.StartTable(1); b.AddFieldOffset(0, v);
        var reader = new FlatBufferReader(b.Finish(b.EndTable()));
        var vec = reader.Root().GetVector(0, 4, "v")!.Value;
        Assert.ThrowsExactly<FlatBufferFormatException>(() => { for (int round = 0; round < 100; round++) for (int i = 0; i < vec.Count; i++) vec.Table(i); });
    }
}
